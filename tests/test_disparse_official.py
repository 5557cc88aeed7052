"""DiSparse as its official code does it (SHI-Labs/DiSparse-Multitask-Model-Compression): the static
importance Σ_b |g_b ⊙ w| on a xavier-re-initialised copy, the live model left alone while scoring,
ERK densities, the dynamic variant's defaults and per-tensor updates, and the pretrained variant."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from adapmtl.engine import resume, train
from adapmtl.engine.checkpoint import load_checkpoint
from adapmtl.methods import MethodContext, MethodError, create_method
from adapmtl.methods.erk import erk_counts, erk_densities
from adapmtl.methods.importance import loss_gradients
from tests.engine_helpers import tiny_config

# --- a linear toy whose gradients are written out by hand ------------------------------------
# backbone z = B x (B: 2x2), heads y_a = A z, y_c = C z (1x2 each), L_t = (y_t - target_t)^2, one sample a batch.
X = [torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 0.5])]
TARGETS = [{"a": 5.0, "c": -4.0}, {"a": -5.0, "c": 4.0}, {"a": 3.0, "c": 2.0}]  # residuals change sign


class Linear3(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(2, 2, bias=False)
        self.heads = nn.ModuleDict({"a": nn.Linear(2, 1, bias=False), "c": nn.Linear(2, 1, bias=False)})

    def forward(self, x):
        z = self.backbone(x)
        return {t: head(z) for t, head in self.heads.items()}


def _toy_batch(step: int) -> dict[str, torch.Tensor]:
    i = (step - 1) % 3
    return {"x": X[i][None], "a": torch.tensor([[TARGETS[i]["a"]]]), "c": torch.tensor([[TARGETS[i]["c"]]])}


def _toy_losses(model, batch):
    out = model(batch["x"])
    return {t: F.mse_loss(out[t], batch[t]) for t in ("a", "c")}


TOY = MethodContext(batches=lambda start, n: (_toy_batch(s) for s in range(start + 1, start + n + 1)),
                    task_losses=_toy_losses, reduce=lambda t: t, reset_optimizer=lambda: None)


def _hand_gradients(B, heads):
    """Per task and batch, the gradients of L_t written out: dL/dH = 2 r z^T, dL/dB = 2 r H^T x^T."""
    out = {t: [] for t in heads}
    for x, target in zip(X, TARGETS):
        z = B @ x
        for t, H in heads.items():
            r = float(H @ z) - target[t]
            out[t].append({"B": 2 * r * torch.outer(H[0], x), t: 2 * r * z[None]})
    return out


def _toy(seed=0):
    torch.manual_seed(seed)
    model = Linear3()
    with torch.no_grad():  # live weights far from any xavier draw
        model.backbone.weight.copy_(torch.tensor([[3.0, -1.0], [0.5, 2.0]]))
        model.heads["a"].weight.copy_(torch.tensor([[1.5, -2.0]]))
        model.heads["c"].weight.copy_(torch.tensor([[-0.5, 1.0]]))
    return model


def test_static_importance_is_the_sum_of_absolute_per_batch_scores_on_a_xavier_copy():
    model = _toy()
    method = create_method({"name": "disparse_static", "importance_batches": 3, "min_density": 0}, 10)
    method.prepare(model)
    method.bind(TOY)
    torch.manual_seed(123)
    scores = method.task_scores(model)
    # the copy's weights: xavier_normal_ (std sqrt(2 / (fan_in + fan_out))) drawn in the MaskSet's order
    torch.manual_seed(123)
    B = nn.init.xavier_normal_(torch.empty(2, 2))
    heads = {"a": nn.init.xavier_normal_(torch.empty(1, 2)), "c": nn.init.xavier_normal_(torch.empty(1, 2))}
    weight = {"B": B, **heads}
    name = {"B": "backbone", "a": "heads.a", "c": "heads.c"}
    grads = _hand_gradients(B, heads)
    for t in ("a", "c"):
        for key in ("B", t):
            summed_abs = sum((g[key] * weight[key]).abs() for g in grads[t])  # Σ_b |g_b ⊙ w|
            abs_summed = sum(g[key] * weight[key] for g in grads[t]).abs()    # |Σ_b g_b · w|: what we did before
            assert torch.allclose(scores[t][name[key]], summed_abs, rtol=1e-5, atol=1e-6)
            assert (summed_abs - abs_summed).max() > 0.1  # the residuals' signs differ, so the two differ
        other = "c" if t == "a" else "a"
        assert torch.equal(scores[t][name[other]], torch.zeros_like(scores[t][name[other]]))  # no gradient: 0
    # the same formula on the live weights gives other scores: the live weights are not what is scored ...
    live = {"B": model.backbone.weight.detach(), "a": model.heads["a"].weight.detach(),
            "c": model.heads["c"].weight.detach()}
    live_grads = _hand_gradients(live["B"], {"a": live["a"], "c": live["c"]})
    live_score = sum((g["B"] * live["B"]).abs() for g in live_grads["a"])
    assert not torch.allclose(scores["a"]["backbone"], live_score, rtol=1e-2)
    # ... and they do not matter at all: other live weights, the same draw, the same scores
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-7.0)
    torch.manual_seed(123)
    again = method.task_scores(model)
    assert all(torch.equal(again[t][n], scores[t][n]) for t in scores for n in scores[t])


def test_static_default_is_fifty_batches_and_the_mask_follows_the_consensus_of_the_scores():
    assert create_method({"name": "disparse_static"}, 10).options.importance_batches == 50
    model = _toy()
    method = create_method({"name": "disparse_static", "importance_batches": 3, "min_density": 0, "target": 0.5}, 10)
    method.prepare(model)
    method.bind(TOY)
    before = {n: w.detach().clone() for n, w in method.maskset.weights().items()}
    torch.manual_seed(5)
    scores = method.task_scores(model)
    torch.manual_seed(5)
    method.begin(model)
    masks = method.maskset.masks
    assert method.maskset.zeros == 4  # exactly half of the 8 weights
    # the rule: each task keeps its top q of backbone (4) + own head (2); a backbone weight is kept if
    # any task keeps it. The mask holds the weights kept at the largest q that keeps at most 4 and lies
    # within those kept at the next q (the exact count breaks the tie by the tasks' ranks).
    def kept_at(k):
        kept = {n: torch.zeros_like(m) for n, m in masks.items()}
        for t, head in (("a", "heads.a"), ("c", "heads.c")):
            flat = torch.cat([scores[t]["backbone"].flatten(), scores[t][head].flatten()])
            top = torch.zeros(6, dtype=torch.bool)
            top[torch.sort(flat, descending=True, stable=True).indices[:k]] = True
            kept["backbone"] |= top[:4].view(2, 2)
            kept[head] |= top[4:].view(1, 2)
        return kept

    k = max(k for k in range(7) if sum(int(m.sum()) for m in kept_at(k).values()) <= 4)
    low, high = kept_at(k), kept_at(k + 1)
    assert all(bool((low[n] <= masks[n]).all()) and bool((masks[n] <= high[n]).all()) for n in masks)
    # the live model keeps its own weights where kept, zeros elsewhere
    for n, w in method.maskset.weights().items():
        assert torch.equal(w.detach(), before[n] * masks[n])


class BNToy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 6, bias=False), nn.BatchNorm1d(6), nn.ReLU(),
                                      nn.Linear(6, 6, bias=False), nn.BatchNorm1d(6))
        self.heads = nn.ModuleDict({"a": nn.Linear(6, 2), "c": nn.Linear(6, 1)})

    def forward(self, x):
        z = self.backbone(x)
        return {t: head(z) for t, head in self.heads.items()}


def _bn_batch(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return {"x": 3 + 2 * torch.randn(8, 3, generator=g), "a": torch.randn(8, 2, generator=g),
            "c": torch.randn(8, 1, generator=g)}


BN_CONTEXT = MethodContext(
    batches=lambda start, n: (_bn_batch(s) for s in range(start + 1, start + n + 1)),
    task_losses=lambda model, b: {"a": F.mse_loss(model(b["x"])["a"], b["a"]),
                                  "c": F.mse_loss(model(b["x"])["c"], b["c"])},
    reduce=lambda t: t, reset_optimizer=lambda: None)


def _bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("options, step", [
    ({"name": "disparse_static", "importance_batches": 3}, None),
    ({"name": "disparse_dynamic", "update_every": 2}, None),
    ({"name": "disparse_dynamic", "update_every": 2}, 4),
    ({"name": "disparse_pretrained", "score": "gradient", "importance_batches": 3, "pretrain": 0.5}, 10),
])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_scoring_leaves_the_live_batchnorm_statistics_and_mode_alone(options, step, mode):
    torch.manual_seed(0)
    model = BNToy()
    method = create_method({**options, "target": 0.5, "min_density": 0}, 20)
    method.prepare(model)
    method.bind(BN_CONTEXT)
    model.train(mode == "train")
    state = _bn_state(model)
    method.begin(model)  # static: scores and prunes; dynamic: ERK masks and the update of step 0
    before = {n: m.clone() for n, m in method.maskset.masks.items()}
    if step is not None:
        method.after_step(model, step)  # dynamic: an update; pretrained: the one pruning
        assert any(not torch.equal(before[n], m) for n, m in method.maskset.masks.items())
    assert method.maskset.zeros == round(0.5 * method.maskset.numel)
    assert all(torch.equal(v, state[k]) for k, v in _bn_state(model).items())
    assert model.training == (mode == "train")
    # scoring the live model instead would have moved them
    loss_gradients(model, method.maskset, BN_CONTEXT, 0, 1, per_task=True)
    assert not torch.equal(_bn_state(model)["backbone.1.running_mean"], state["backbone.1.running_mean"])


def _official_erk(shapes, density, power_scale=0.9):
    """googleAI_ERK (dynamic_prune.py) as the official code iterates it: while ε·max raw > 1, make the
    tensors of the largest raw density dense and solve ε again over the rest."""
    dense = set()
    while True:
        raw = {i: (sum(s) / math.prod(s)) ** power_scale for i, s in enumerate(shapes) if i not in dense}
        rhs = sum(math.prod(s) * density for i, s in enumerate(shapes) if i not in dense) \
            - sum(math.prod(s) * (1 - density) for i, s in enumerate(shapes) if i in dense)
        eps = rhs / sum(raw[i] * math.prod(shapes[i]) for i in raw)
        top = max(raw.values())
        if eps * top <= 1:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]
        dense |= {i for i, r in raw.items() if r == top}


def test_erk_densities_by_hand():
    shapes = [(8, 3, 3, 3), (4, 8), (2, 4)]  # 216, 32 and 8 weights
    r = [(17 / 216) ** 0.9, (12 / 32) ** 0.9, (6 / 8) ** 0.9]  # (sum of dims / entries) ** 0.9
    # density 0.1: 25.6 weights kept; ε = 25.6 / Σ r_l n_l and every ε r_l < 1
    eps = 25.6 / (216 * r[0] + 32 * r[1] + 8 * r[2])
    assert eps * r[2] < 1
    assert erk_densities(shapes, 0.1) == pytest.approx([eps * x for x in r], rel=1e-9)
    # density 0.5: ε r exceeds 1 for the (2, 4) tensor, then for the (4, 8) one: both dense, and the
    # conv keeps the rest, 128 - 32 - 8 = 88 of its 216
    assert erk_densities(shapes, 0.5) == pytest.approx([88 / 216, 1.0, 1.0], rel=1e-9)
    # RigL's power scale 1 gives other densities
    assert erk_densities(shapes, 0.1, power_scale=1.0)[0] != pytest.approx(erk_densities(shapes, 0.1)[0], rel=1e-3)
    # integer counts: exact total, largest remainders first (13.8, 8.3, 3.9 -> 14, 8, 4 for 26 kept)
    assert [d * n for d, n in zip(erk_densities(shapes, 26 / 256), (216, 32, 8))] == pytest.approx(
        [13.79, 8.32, 3.88], abs=0.01)
    assert erk_counts(shapes, 26) == [14, 8, 4]
    assert erk_counts(shapes, 26, minimum=[20, 1, 1]) == [20, 4, 2]  # a floor (the collapse guard) holds
    with pytest.raises(MethodError, match="cannot keep 10"):
        erk_counts(shapes, 10, minimum=[20, 1, 1])
    # the official iteration, on shapes of a ResNet-like stack and several densities
    stack = [(64, 3, 7, 7), (64, 64, 3, 3), (128, 64, 3, 3), (128, 64, 1, 1), (256, 128, 3, 3), (40, 256, 1, 1),
             (3, 256, 1, 1), (10, 256)]
    for density in (0.02, 0.1, 0.3, 0.5, 0.8):
        assert erk_densities(stack, density) == pytest.approx(_official_erk(stack, density), rel=1e-9)


def test_dynamic_defaults_are_the_official_ones():
    method = create_method({"name": "disparse_dynamic"}, 20000)
    opts = method.options
    assert (opts.regrow_fraction, opts.reach_at, opts.update_every, opts.erk_power_scale) == (0.5, 0.75, 50, 0.9)
    assert "importance_batches" not in type(opts).model_fields  # it starts from ERK, not from scores
    method.prepare(BNToy())
    assert method.end == 15000
    assert method.updates == list(range(0, 15000, 50)) and method.final_step == 14950  # iteration % 50 == 0, < END
    assert [method.drop_fraction(s) for s in (0, 7500, 15000)] == pytest.approx([0.5, 0.25, 0.0])
    taskonomy = create_method({"name": "disparse_dynamic", "update_every": 250}, 100000)
    taskonomy.prepare(BNToy())
    assert (taskonomy.end, taskonomy.updates[-1], len(taskonomy.updates)) == (75000, 74750, 300)


def test_dynamic_starts_from_random_erk_masks_and_keeps_every_tensor_at_its_erk_count():
    counts_seen, masks_seen = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = BNToy()
        method = create_method({"name": "disparse_dynamic", "target": 0.6, "update_every": 2,
                                "min_density": 0}, 12)
        method.prepare(model)
        method.bind(BN_CONTEXT)
        expected = method.erk_counts()
        shapes = [m.shape for m in method.maskset.masks.values()]
        assert list(expected.values()) == erk_counts(shapes, method.maskset.numel - round(0.6 * method.maskset.numel))
        torch.manual_seed(100 + seed)
        method.begin(model)
        counts_seen.append({n: int(m.sum()) for n, m in method.maskset.masks.items()})
        assert counts_seen[-1] == expected
        masks_seen.append({n: m.clone() for n, m in method.maskset.masks.items()})
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(1, 12):
            previous = {n: m.clone() for n, m in method.maskset.masks.items()}
            optimizer.zero_grad()
            sum(BN_CONTEXT.task_losses(model, _bn_batch(step)).values()).backward()
            optimizer.step()
            magnitude = {n: w.detach().abs().clone() for n, w in method.maskset.weights().items()}
            method.after_step(model, step)
            assert {n: int(m.sum()) for n, m in method.maskset.masks.items()} == expected
            if step in method.updates:  # the survivors' largest magnitudes (beyond the drop) all stay
                for n, m in previous.items():
                    move = round(method.drop_fraction(step) * int(m.sum()))
                    keep = torch.sort(torch.where(m, magnitude[n], -1.0).flatten(), descending=True,
                                      stable=True).indices[:int(m.sum()) - move]
                    assert bool(method.maskset.masks[n].flatten()[keep].all())
            else:
                assert all(torch.equal(previous[n], method.maskset.masks[n]) for n in previous)
        assert method.updates == [0, 2, 4, 6, 8]
    assert any(not torch.equal(masks_seen[0][n], masks_seen[1][n]) for n in masks_seen[0])  # random draws


def test_pretrained_gradient_score_is_the_sum_of_absolute_gradients_times_the_squared_trained_weight():
    model = _toy()
    method = create_method({"name": "disparse_pretrained", "score": "gradient", "importance_batches": 3,
                            "pretrain": 0.5, "min_density": 0}, 10)
    method.prepare(model)
    method.bind(TOY)
    assert method.final_step == 5 and method.dense_iterations == 5
    scores = method.task_scores(model, 6)  # batches of steps 7, 8, 9: toy batches 1, 2, 3
    live = {"B": model.backbone.weight.detach(), "a": model.heads["a"].weight.detach(),
            "c": model.heads["c"].weight.detach()}
    grads = _hand_gradients(live["B"], {"a": live["a"], "c": live["c"]})
    for t in ("a", "c"):
        assert torch.allclose(scores[t]["backbone"], sum(g["B"].abs() for g in grads[t]) * live["B"] ** 2, rtol=1e-5)
        assert torch.allclose(scores[t][f"heads.{t}"], sum(g[t].abs() for g in grads[t]) * live[t] ** 2, rtol=1e-5)
    magnitude = create_method({"name": "disparse_pretrained", "pretrain": 0.5}, 10)
    magnitude.prepare(model)
    assert all(torch.equal(s, live[k].abs()) for s, k in zip(magnitude.task_scores(model, 5)["a"].values(),
                                                              ("B", "a", "c")))


@pytest.mark.parametrize("score", ["magnitude", "gradient"])
def test_pretrained_trains_dense_then_prunes_once_to_the_exact_target(tmp_path, score):
    overrides = ["name=p", "method.name=disparse_pretrained", f"method.score={score}", "method.importance_batches=2",
                 "method.target=0.7"]
    train(tiny_config(tmp_path, *overrides), stop_at=10)
    dense = load_checkpoint(tmp_path / "p" / "checkpoints" / "last.pt")["method"]["masks"]
    assert all(bool(m.all()) for m in dense.values())  # 20/21 of 12 steps: dense through step 11
    result = resume(tmp_path / "p")
    assert (result["dense_iterations"], result["train_iterations"]) == (11, 12)
    assert abs(result["sparsity"]["overall"] - 0.7) <= 0.0005
    masks = load_checkpoint(tmp_path / "p" / "checkpoints" / "last.pt")["method"]["masks"]
    zeros = sum(int((~m).sum()) for m in masks.values())
    assert zeros == round(0.7 * sum(m.numel() for m in masks.values()))  # exact count
    assert result["selected_step"] == 12  # only the pruned model may be selected


def test_pretrained_needs_a_dense_phase_and_a_fine_tuning_phase():
    with pytest.raises(MethodError, match="pruning step"):
        create_method({"name": "disparse_pretrained", "pretrain": 0.99}, 12).prepare(BNToy())
    assert create_method({"name": "disparse_pretrained"}, 21000).options.pretrain * 21000 == pytest.approx(20000)
