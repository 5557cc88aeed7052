"""The mask-based methods mask nn.MultiheadAttention's input projections, as the soft-threshold core prunes them."""
import copy

import pytest
import torch
from torch import nn

from adapmtl.methods import MaskSet, MethodContext, MethodError, create_method
from adapmtl.sparsity import prunable_weights

TARGET = 0.7
STEPS = 8


class TinyMultitaskTransformer(nn.Module):
    """A two-layer, two-head TransformerEncoder backbone (d_model 8, feed-forward 16) and two Linear heads."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.backbone = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.heads = nn.ModuleDict({"a": nn.Linear(8, 3), "b": nn.Linear(8, 2)})
        with torch.no_grad():  # untie the copied encoder layers' magnitudes
            for parameter in self.parameters():
                parameter.normal_(0.0, 0.3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {task: head(features) for task, head in self.heads.items()}


def _hand_weights(model: TinyMultitaskTransformer) -> dict[str, torch.Tensor]:
    """Every tensor the soft-threshold core prunes, listed by hand: per encoder layer the attention's
    in-projection [24, 8] and out-projection [8, 8], the feed-forward [16, 8] and [8, 16]; the heads [3, 8], [2, 8]."""
    weights = {}
    for i, layer in enumerate(model.backbone.layers):
        weights[f"backbone.layers.{i}.self_attn.in_proj_weight"] = layer.self_attn.in_proj_weight
        weights[f"backbone.layers.{i}.self_attn.out_proj"] = layer.self_attn.out_proj.weight
        weights[f"backbone.layers.{i}.linear1"] = layer.linear1.weight
        weights[f"backbone.layers.{i}.linear2"] = layer.linear2.weight
    weights["heads.a"], weights["heads.b"] = model.heads["a"].weight, model.heads["b"].weight
    return weights


HAND_NUMEL = 2 * (24 * 8 + 8 * 8 + 16 * 8 + 8 * 16) + 3 * 8 + 2 * 8  # 1064


def _batch(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return {"x": torch.randn(4, 5, 8, generator=g), "a": torch.randn(4, 5, 3, generator=g),
            "b": torch.randn(4, 5, 2, generator=g)}


def _task_losses(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    outputs = model(batch["x"])
    return {task: nn.functional.mse_loss(outputs[task], batch[task]) for task in ("a", "b")}


CONTEXT = MethodContext(batches=lambda start, n: (_batch(s) for s in range(start + 1, start + n + 1)),
                        task_losses=_task_losses, reduce=lambda t: t, reset_optimizer=lambda: None)


def _train(method_options: dict, seed: int = 0):
    """A tiny loop standing in for the engine: prepare, bind, begin, STEPS Adam steps with after_step, finalize."""
    torch.manual_seed(seed)
    model = TinyMultitaskTransformer()
    method = create_method({"target": TARGET, **method_options}, STEPS)
    method.prepare(model)
    method.bind(CONTEXT)
    method.begin(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(1, STEPS + 1):
        optimizer.zero_grad()
        sum(_task_losses(model, _batch(step)).values()).backward()
        optimizer.step()
        method.after_step(model, step)
    method.finalize(model)
    return model, method


@pytest.mark.parametrize("options", [
    {"name": "imp", "rounds": 2, "prune_start": 0.25, "reach_at": 0.5},
    {"name": "snip", "importance_batches": 2},
    {"name": "random"},
])
def test_mask_methods_mask_the_attention_projections_to_the_exact_target(options):
    model, method = _train(options)
    hand = _hand_weights(model)
    masks = method.maskset.masks
    assert list(masks) == list(hand) == list(prunable_weights(model))
    assert sum(w.numel() for w in hand.values()) == HAND_NUMEL == method.maskset.numel
    zeros = sum(int((w == 0).sum()) for w in hand.values())
    assert zeros == round(TARGET * HAND_NUMEL)  # exact count: 745 of 1064
    assert abs(zeros / HAND_NUMEL - TARGET) <= 0.0005
    for i in range(2):
        name = f"backbone.layers.{i}.self_attn.in_proj_weight"
        in_proj, mask = hand[name], masks[name]
        assert 0 < int((~mask).sum()) < mask.numel()  # the attention projection is masked, not left dense
        assert bool((in_proj[~mask] == 0).all()) and bool((in_proj[mask] != 0).all())
    # the collapse guard holds per tensor: each keeps max(1, ceil(0.01 n)) weights at least (2 of in_proj's 192)
    assert all(int((w != 0).sum()) >= max(1, -(-w.numel() // 100)) for w in hand.values())


def test_masked_in_projection_entries_stay_zero_and_get_no_gradient():
    model, method = _train({"name": "random"})
    name = "backbone.layers.0.self_attn.in_proj_weight"
    in_proj, mask = model.backbone.layers[0].self_attn.in_proj_weight, method.maskset.masks[name]
    sum(_task_losses(model, _batch(99)).values()).backward()
    assert bool((in_proj.grad[~mask] == 0).all()) and bool((in_proj.grad[mask] != 0).any())
    # the outputs depend on the pruned entries only through the mask: filling them changes the output,
    # and apply() restores exactly the masked model's output
    x = _batch(100)["x"]
    with torch.no_grad():
        before = model(x)["a"].clone()
        in_proj[~mask] = 0.5
        assert not torch.allclose(model(x)["a"], before)
    method.maskset.apply()
    assert bool((in_proj[~mask] == 0).all())
    with torch.no_grad():
        assert torch.equal(model(x)["a"], before)


def test_snip_scores_the_in_projection_by_gradient_times_weight():
    torch.manual_seed(0)
    reference = TinyMultitaskTransformer()
    _, method = _train({"name": "snip", "importance_batches": 2, "min_density": 0})
    # |g · w| of the summed losses over batches 1 and 2, computed here with plain autograd on the initial model
    weights = _hand_weights(reference)
    grads = {n: torch.zeros_like(w) for n, w in weights.items()}
    for step in (1, 2):
        for n, g in zip(weights, torch.autograd.grad(sum(_task_losses(reference, _batch(step)).values()),
                                                      list(weights.values()))):
            grads[n] += g
    scores = torch.cat([(grads[n] * w.detach()).abs().reshape(-1).double() for n, w in weights.items()])
    keep = HAND_NUMEL - round(TARGET * HAND_NUMEL)
    expected = torch.zeros(HAND_NUMEL, dtype=torch.bool)
    expected[torch.sort(scores, descending=True, stable=True).indices[:keep]] = True
    got = torch.cat([m.reshape(-1) for m in method.maskset.masks.values()])
    assert torch.equal(got, expected)


def test_component_assignment_and_state_dict_use_the_tensor_names():
    torch.manual_seed(0)
    model = TinyMultitaskTransformer()
    masks = MaskSet(model)
    assert masks.component_of == {**{n: "backbone" for n in _hand_weights(model) if n.startswith("backbone.")},
                                  "heads.a": "a", "heads.b": "b"}
    masks.keep_top({n: w.abs() for n, w in masks.weights().items()}, 300)
    state = masks.state_dict()
    fresh = MaskSet(TinyMultitaskTransformer())
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.masks[n], state[n]) for n in state) and fresh.zeros == HAND_NUMEL - 300
    old = {n: m for n, m in state.items() if not n.endswith("in_proj_weight")}  # a checkpoint without them
    with pytest.raises(MethodError, match="does not match"):
        fresh.load_state_dict(old)


def test_linear_only_models_keep_their_layer_names_as_mask_names():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    masks = MaskSet(model)
    assert list(masks.state_dict()) == ["0", "2"]
    assert [m.shape for m in masks.masks.values()] == [torch.Size([3, 4]), torch.Size([2, 3])]


def test_separate_q_k_v_projections_are_masked():
    torch.manual_seed(0)
    model = nn.Module()
    model.attn = nn.MultiheadAttention(8, 2, kdim=4, vdim=6, batch_first=True)  # kdim/vdim: q/k/v_proj_weight
    model.head = nn.Linear(8, 2)
    masks = MaskSet(model, min_density=0)
    assert list(masks.masks) == ["attn.q_proj_weight", "attn.k_proj_weight", "attn.v_proj_weight",
                                 "attn.out_proj", "head"]
    assert masks.numel == 8 * 8 + 8 * 4 + 8 * 6 + 8 * 8 + 2 * 8
    # magnitude pruning, computed here: the 112 largest |w| over all five tensors are kept, the rest are zeros
    magnitudes = torch.cat([w.detach().abs().reshape(-1).double() for w in masks.weights().values()])
    expected = torch.zeros(masks.numel, dtype=torch.bool)
    expected[torch.sort(magnitudes, descending=True, stable=True).indices[:112]] = True
    masks.prune_magnitude(0.5)
    assert torch.equal(torch.cat([m.reshape(-1) for m in masks.masks.values()]), expected)
    k = model.attn.k_proj_weight
    assert bool((k[~masks.masks["attn.k_proj_weight"]] == 0).all()) and bool((k[masks.masks["attn.k_proj_weight"]] != 0).all())
