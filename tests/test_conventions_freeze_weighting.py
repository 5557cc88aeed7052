"""Issue 16: the original code's freeze rule (a per-step gate, no final trim) and the timing of its
adaptive weighting ("paper": step i's weights include step i's losses; begin/window unscaled)."""
import copy
import math

import pytest
import torch

import adapmtl
from adapmtl.engine.data import train_loader
from adapmtl.engine.distributed import setup
from adapmtl.engine.trainer import build_run, task_outputs, train_step
from adapmtl.methods import create_method
from adapmtl.sparsity import sparse_layers
from adapmtl.weighting import AdaptiveWeighting, WeightingError, create_weighting
from tests.engine_helpers import tiny_config
from tests.toy_models import LinearMultitask

# |W| of LinearMultitask's 15 weights, spread so that no layer empties: the 10 smallest are
# 0.01 … 0.10 (one τ in (0.06, 0.07) zeroes exactly 6/15 = 40 %), each layer keeps a large one.
MAGNITUDES = {
    "backbone.0": [0.01, 0.03, 0.05, 0.07, 0.20, 0.30],
    "heads.a": [0.02, 0.04, 0.25],
    "heads.b": [0.06, 0.08, 0.09, 0.10, 0.22, 0.35],
}
TARGET = 0.4


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def toy_model() -> LinearMultitask:
    model = LinearMultitask()
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, values in MAGNITUDES.items():
            weight = modules[name].weight
            signs = torch.tensor([(-1.0) ** k for k in range(len(values))])
            weight.copy_((signs * torch.tensor(values)).reshape(weight.shape))
    return model


# ---------------------------------------------------------------- freeze: a gate, not a latch

@pytest.mark.parametrize("attach", [True, False])
def test_freeze_is_a_per_step_gate_that_reopens_when_the_sparsity_falls_back(attach):
    model = adapmtl.sparsify(toy_model(), init=logit(0.045), granularity="global")  # 4/15 zero
    controller = adapmtl.SparsityController(model, target=TARGET, total_steps=40, policy="freeze")
    scores = adapmtl.threshold_parameters(model)[0]
    optimizer = torch.optim.Adam([scores], lr=0.05)
    if attach:
        controller.attach(optimizer)
    layers = list(sparse_layers(model))
    grown_at, moved, closed, sparsities = 12, [], [], []
    for step in range(1, 41):
        before = scores.detach().clone()
        scores.grad = -torch.ones_like(scores)  # a steady push upwards: the threshold rises while it may
        optimizer.step()
        if step == grown_at:  # the weights grow under a frozen τ: every |w| doubles
            with torch.no_grad():
                for layer in layers:
                    layer.dense_weight.mul_(2)
        report = controller.step(step)
        moved.append(not torch.equal(scores.detach(), before))
        closed.append(controller.frozen_scores is not None)
        sparsities.append(report.overall)
    # the gate decides every step from the sparsity measured after the previous one
    for step in range(2, 41):
        assert moved[step - 1] == (sparsities[step - 2] < TARGET), step
        assert closed[step - 1] == (sparsities[step - 1] >= TARGET), step
    first = closed.index(True) + 1  # the first crossing: 6/15 once τ passes 0.06
    assert sparsities[first - 1] == pytest.approx(6 / 15) and first < grown_at
    assert not any(moved[first:grown_at])  # held while at the target
    assert sparsities[grown_at - 1] == pytest.approx(3 / 15)  # the grown weights fell back below it ...
    assert not closed[grown_at - 1] and moved[grown_at]  # ... so the gate re-opened: the score moves again
    again = closed.index(True, grown_at) + 1  # and it closes once more when the target is reached again
    assert all(moved[grown_at:again]) and sparsities[again - 1] >= TARGET and not any(moved[again:])
    assert controller.frozen_steps == moved.count(False)
    summary = controller.summary()
    assert summary["frozen"] is True and summary["frozen_steps"] == moved.count(False)
    if attach:  # the gradient was dropped, as in the original: Adam counted only the steps that moved
        assert optimizer.state[scores]["step"] == moved.count(True)


def test_the_gate_state_survives_a_checkpoint():
    model = adapmtl.sparsify(toy_model(), init=logit(0.065), granularity="global")  # 6/15: at the target
    controller = adapmtl.SparsityController(model, target=TARGET, total_steps=10, policy="freeze")
    controller.step(1)
    controller.step(2)
    again = adapmtl.SparsityController(model, target=TARGET, total_steps=10, policy="freeze")
    again.load_state_dict(controller.state_dict())
    assert torch.equal(again.frozen_scores, controller.frozen_scores) and again.frozen_steps == 1
    old = {k: v for k, v in controller.state_dict().items() if k != "frozen_steps"}  # a checkpoint before the gate
    again.load_state_dict(old)
    assert again.frozen_steps == 0


# ---------------------------------------------------------------- freeze: no final trim

def _finalized(policy: str, tau: float):
    method = create_method({"name": "adapmtl", "target": TARGET, "policy": policy, "init": logit(tau)}, 10)
    model = toy_model()
    method.prepare(model)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(x)
    report = method.finalize(model)
    with torch.no_grad():
        after = model(x)
    return report, before, after, model


@pytest.mark.parametrize("tau, zeros", [(0.085, 8), (0.045, 4)])  # above the target (8/15), below it (4/15)
def test_finalize_under_freeze_leaves_the_sparsity_where_the_gate_left_it(tau, zeros):
    report, before, after, model = _finalized("freeze", tau)
    assert report.target is None and not report.trimmed and report.aimed_at == TARGET
    assert report.shift == 0.0 and report.pruned == report.revived == 0
    assert report.before.overall == report.after.overall == zeros / 15
    assert adapmtl.sparsity_report(model).overall == zeros / 15
    assert all(torch.equal(before[t], after[t]) for t in before)  # outputs unchanged: nothing was trimmed
    assert f"no trim; the run aimed at {TARGET:.4%}" in str(report)


def test_finalize_under_exact_still_trims_to_the_target():
    report, *_ = _finalized("exact", 0.085)  # what "freeze" used to do too: revive 2 weights down to 40 %
    assert report.trimmed and report.target == TARGET and report.aimed_at is None
    assert report.before.overall == 8 / 15 and report.after.overall == 6 / 15 and report.revived == 2


# ---------------------------------------------------------------- adaptive weighting's conventions

LOSSES = [{"a": 2.0, "b": 4.0}, {"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 1.0}]
# r(2) = (|2-1|/1, |4-3|/3) = (1, 1/3)  -> w = 2·(1, 1/3)/(4/3) = (1.5, 0.5)
# r(3) = (|1-2|/2, |3-1|/1) = (1/2, 2)  -> w = 2·(1/2, 2)/(5/2) = (0.4, 1.6)
W2, W3 = {"a": 1.5, "b": 0.5}, {"a": 0.4, "b": 1.6}
ONES = {"a": 1.0, "b": 1.0}


def test_paper_weights_of_step_i_already_include_its_own_losses():
    paper = AdaptiveWeighting(["a", "b"], 100, begin=0, window=1, convention="paper")
    assert paper.uses_current_losses
    used = [paper.weights_for(losses) for losses in LOSSES]  # before each step's backward
    assert used == [ONES, pytest.approx(W2), pytest.approx(W3)]


def test_corrected_weights_of_step_i_come_from_the_steps_before_it():
    corrected = AdaptiveWeighting(["a", "b"], 100, begin=0, window=1)
    assert corrected.convention == "corrected" and not corrected.uses_current_losses
    used = []
    for losses in LOSSES:
        used.append(corrected.weights())  # before the step
        corrected.update(losses)  # after it
    assert used == [ONES, ONES, pytest.approx(W2)]
    assert corrected.weights() == pytest.approx(W3)  # the weights step 4 would use


def test_paper_begin_counts_the_current_step():
    paper = AdaptiveWeighting(["a", "b"], 100, begin=2, window=1, convention="paper")
    assert [paper.weights_for(losses) for losses in LOSSES] == [ONES, ONES, pytest.approx(W3)]  # r(2) left out


@pytest.mark.parametrize("convention, steps, expected", [
    ("paper", 100_000, (5000, 500)),  # the original keeps them on Taskonomy's 100k steps
    ("corrected", 100_000, (25_000, 2_500)),  # ours: the same share of the run
    ("paper", 2_000, (5000, 500)),
    ("corrected", 2_000, (500, 50)),
    ("paper", 20_000, (5000, 500)),
    ("corrected", 20_000, (5000, 500)),  # the paper's recipe: the two agree
])
def test_begin_and_window_defaults(convention, steps, expected):
    weighting = create_weighting("adaptive", ["a", "b"], steps, convention=convention)
    assert (weighting.begin, weighting.window) == expected and weighting.convention == convention
    set_by_hand = create_weighting("adaptive", ["a"], steps, convention=convention, begin=7, window=3)
    assert (set_by_hand.begin, set_by_hand.window) == (7, 3)


def test_conventions_reach_only_the_weightings_that_tell_them_apart():
    equal = create_weighting("equal", ["a", "b"], 10, convention="paper")  # equal weights under both
    assert not equal.uses_current_losses and equal.weights_for({"a": 1.0, "b": 2.0}) == ONES
    with pytest.raises(WeightingError, match=r"convention must be one of \('paper', 'corrected'\), got 'orig'"):
        create_weighting("adaptive", ["a"], 10, convention="orig")
    with pytest.raises(WeightingError, match="convention must be one of"):
        AdaptiveWeighting(["a"], 10, convention="Paper")


def test_paper_state_round_trip_continues_alike():
    straight = AdaptiveWeighting(["a", "b"], 100, begin=0, window=2, convention="paper")
    split = AdaptiveWeighting(["a", "b"], 100, begin=0, window=2, convention="paper")
    for losses in LOSSES[:2]:
        straight.weights_for(losses)
        split.weights_for(losses)
    resumed = AdaptiveWeighting(["a", "b"], 100, begin=0, window=2, convention="paper")
    resumed.load_state_dict(split.state_dict())
    assert resumed.weights_for(LOSSES[2]) == straight.weights_for(LOSSES[2])


# ---------------------------------------------------------------- the engine's step under "paper"

def _paper_run(tmp_path, *overrides):
    config = tiny_config(tmp_path, "method.name=dense", "method.weighting=adaptive",
                         "method.weighting_options={begin: 0, window: 1}", *overrides)
    if "convention" in type(config).model_fields:  # the config's own field, once it has one
        config = config.model_copy(update={"convention": "paper"})
    else:
        object.__setattr__(config, "convention", "paper")
    return config, build_run(config, tmp_path / "r", setup("cpu"))


@pytest.mark.parametrize("accumulate", [1, 2])
def test_train_step_weighs_the_step_with_weights_that_include_its_own_losses(tmp_path, accumulate):
    config, run = _paper_run(tmp_path, f"train.accumulate={accumulate}")
    assert run.weighting.convention == "paper" and run.weighting.uses_current_losses
    assert (run.weighting.begin, run.weighting.window) == (0, 1)
    batches = iter(train_loader(config, run.datasets["train"], 0))
    first = train_step(run, next(batches))
    batch = next(batches)
    start = copy.deepcopy(run.model.state_dict())
    captured = {}

    def capture(*_, **__):  # the optimizer step of step 2: keep the gradients, move nothing
        captured.update({n: p.grad.clone() for n, p in run.model.named_parameters() if p.grad is not None})

    run.optimizer.step = capture
    torch.manual_seed(5)  # the heads' dropout draws alike in the step and in the reference below
    second = train_step(run, batch)
    tasks = list(run.tasks)
    ratios = {t: abs(first[t] - second[t]) / second[t] for t in tasks}  # r(2): step 2's own losses
    expected = {t: len(tasks) * ratios[t] / sum(ratios.values()) for t in tasks}
    assert run.weighting.weights() == pytest.approx(expected)
    # step 2's gradient is that of Σ_t w_t(2)·L_t(2) over its micro-batches, w_t(2) from L(2)
    run.model.load_state_dict(start)
    run.model.zero_grad(set_to_none=True)
    w = torch.tensor([expected[t] for t in tasks])
    torch.manual_seed(5)
    for i in range(accumulate):
        chunk = {k: v.chunk(accumulate)[i] for k, v in batch.items()}
        outputs = task_outputs(run.model(chunk["image"]), tasks)
        losses = torch.stack([task.loss(outputs[t].float(), chunk[t]) for t, task in run.tasks.items()])
        ((w * losses).sum() / accumulate).backward()
    reference = {n: p.grad for n, p in run.model.named_parameters() if p.grad is not None}
    assert reference.keys() == captured.keys()
    for name in reference:
        torch.testing.assert_close(captured[name], reference[name], rtol=1e-5, atol=1e-7)


def test_a_non_finite_loss_under_paper_stops_before_the_weighting_records_it(tmp_path, monkeypatch):
    from adapmtl.engine import NonFiniteLossError
    from adapmtl.tasks.depth import DepthTask

    config, run = _paper_run(tmp_path)
    original = DepthTask.loss
    monkeypatch.setattr(DepthTask, "loss", lambda self, p, t: original(self, p, t) * float("nan"))
    state = run.weighting.state_dict()
    with pytest.raises(NonFiniteLossError, match="depth_zbuffer is not finite"):
        train_step(run, next(iter(train_loader(config, run.datasets["train"], 0))))
    assert run.weighting.state_dict() == state and run.step == 0
