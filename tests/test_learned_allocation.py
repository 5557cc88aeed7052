"""The method's mechanism acts (issue 13): thresholds learn at a rate independent of the run's
length, learn an allocation that one global threshold does not give, and the run says so."""
import json

import pytest
import torch

import adapmtl
from adapmtl.engine import train
from adapmtl.engine.config import load_config
from adapmtl.engine.trainer import _param_groups
from adapmtl.methods import create_method
from adapmtl.quickstart import learned_allocation
from adapmtl.sparsity.budget import PAPER_BUDGET, lr_budget, threshold_lr_scale
from tests.engine_helpers import tiny_config
from tests.toy_models import RedundantHead

STEPS, LR, TARGET = 200, 1e-2, 0.7


def test_the_budget_is_the_papers_recipe_and_independent_of_the_run_length():
    assert PAPER_BUDGET == pytest.approx(1e-3 * 4000 * (1 + 1 / 2 + 1 / 4 + 1 / 8 + 1 / 16))  # 7.75 logits
    assert threshold_lr_scale(1e-3, 4000, 0.5, 20_000) == 1.0  # the paper's recipe: unchanged
    quickstart = lr_budget(1e-3, 200, 0.5, 500)  # 200 + 100 + 25 steps' worth of lr
    assert quickstart == pytest.approx(0.325)
    assert threshold_lr_scale(1e-3, 200, 0.5, 500) * quickstart == pytest.approx(PAPER_BUDGET)
    assert lr_budget(1e-4, 12_000, 0.3, 100_000) == pytest.approx(1.7142, abs=1e-4)  # Taskonomy: below 7.75
    assert threshold_lr_scale(1e-2, 1, 1.0, 10_000) == 1.0  # a run with a larger budget is never slowed
    with pytest.raises(ValueError, match="lr_gamma"):
        lr_budget(1e-3, 10, 0.0, 100)


@pytest.mark.parametrize("overrides, expected", [
    ([], 1e-3 * 7.75 / 0.325),  # auto: the paper's budget over the quickstart's 500 steps
    (["train.threshold_lr=0.05"], 0.05),  # set by hand: wins, unscaled
    (["train.threshold_lr_scale=2"], 2e-3),
    (["train.steps=20000", "train.lr_step=4000"], 1e-3),  # the paper's recipe: exactly lr
])
def test_the_threshold_group_gets_the_scaled_learning_rate(overrides, expected):
    config = load_config("quickstart", overrides)
    method = create_method(config.method, config.train.steps)
    model = RedundantHead()
    method.prepare(model)
    groups = _param_groups(method, model, config.train)
    assert [g.get("lr") for g in groups if g.get("role") == "thresholds"] == [pytest.approx(expected)]
    assert "lr" not in groups[0]  # the weights keep train.lr


def _run(granularity: str, seed: int = 0):
    """A short CPU run: the paper's recipe in miniature (Adam (0.5, 0.999), weight decay 1e-4),
    thresholds at the budget-scaled rate, the controller, finalize to the target."""
    torch.manual_seed(seed)
    model = adapmtl.sparsify(RedundantHead(), init="auto", granularity=granularity)
    data = torch.Generator().manual_seed(1)
    x = torch.randn(256, 8, generator=data)
    needed = torch.tanh(x @ torch.randn(8, 4, generator=data))
    redundant = 0.5 * x[:, :1]
    thresholds = adapmtl.threshold_parameters(model)
    weights = [p for p in model.parameters() if all(p is not t for t in thresholds)]
    optimizer = torch.optim.Adam([{"params": weights},
                                  {"params": thresholds, "lr": LR * threshold_lr_scale(LR, STEPS, 1.0, STEPS)}],
                                 lr=LR, betas=(0.5, 0.999), weight_decay=1e-4)
    controller = adapmtl.SparsityController(model, target=TARGET, total_steps=STEPS)
    for step in range(1, STEPS + 1):
        out = model(x)
        loss = (out["needed"] - needed).pow(2).mean() + (out["redundant"] - redundant).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        controller.step(step)
    report = adapmtl.finalize(model, target=TARGET)
    learned = {c: v.sparsity for c, v in report.after.components.items()}
    return learned, report.global_allocation, controller.summary()


@pytest.mark.parametrize("seed", [0, 1])
def test_component_thresholds_prune_the_redundant_head_harder_than_one_global_threshold(seed):
    learned, one_threshold, summary = _run("component", seed)
    assert sum(learned.values()) > 0  # finalized at the target
    # the redundant head takes the zeros (measured: +6.7 to +9.6 pp); the backbone every task needs is spared
    assert learned["redundant"] >= one_threshold["redundant"] + 0.04
    assert learned["backbone"] <= one_threshold["backbone"] - 0.10
    learned_scores = summary["learned"]
    assert learned_scores["redundant"] - learned_scores["backbone"] > 1.0  # logits of the scores' own learning


def test_one_global_threshold_gives_exactly_the_global_allocation():
    learned, one_threshold, summary = _run("global")
    assert learned == pytest.approx(one_threshold, abs=1e-9)
    assert list(summary["learned"]) == ["global"]


def test_result_json_accounts_for_the_controller_and_the_allocation(tmp_path):
    result = train(tiny_config(tmp_path, "name=a"))
    saved = json.loads((tmp_path / "a" / "result.json").read_text())
    controller, allocation = saved["controller"], saved["allocation"]
    assert result["controller"] == controller
    assert 1 <= controller["measurements"] and 0 <= controller["interventions"] <= controller["measurements"]
    assert controller["total_shift"] >= abs(controller["net_shift"])
    for group, score in controller["scores"].items():  # each score = init + own learning + the controller's shift
        assert score == pytest.approx(controller["init"] + controller["learned"][group] + controller["net_shift"])
    assert set(allocation) == {"backbone", "segment_semantic", "normal", "depth_zbuffer"}
    numel = saved["sparsity"]["numel"]
    total = sum(numel.values())
    for key in ("sparsity", "global"):  # both allocations give the same overall sparsity (to a few tied weights)
        overall = sum(allocation[c][key] * numel[c] for c in allocation) / total
        assert overall == pytest.approx(0.8, abs=1e-3), key
    assert saved["guard"]["min_density"] == 0.01 and saved["guard"]["collapsed"] == []
    printed = learned_allocation(saved)  # what `adapmtl quickstart` prints under its table
    assert f"stepped in at {controller['interventions']} of {controller['measurements']} measurements" in printed
    b = allocation["backbone"]
    assert f"| backbone | {100 * b['sparsity']:.2f} | {100 * b['global']:.2f} |" in printed
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    records = [r for r in log if "controller" in r]
    assert records and records[-1]["controller"]["interventions"] == controller["interventions"]


def test_auto_init_starts_at_the_live_weights_scale_past_a_trained_models_dead_channels():
    import math

    from adapmtl.sparsity.sparsify import auto_init

    torch.manual_seed(0)
    live = torch.randn(100_000)
    dead = torch.full((3_000,), 4e-10)  # weight decay left these channels at ~1e-10 (3 % of the weights)
    live = live[live.abs() > 0.01 * live.abs().median()]  # no live weight is negligible here
    q = float(live.abs().kthvalue(1_000).values)  # the 1 % quantile of the live weights
    assert auto_init([torch.cat([live, dead])]) == pytest.approx(math.log(q / (1 - q)), abs=0.05)
    assert auto_init([live]) == pytest.approx(math.log(q / (1 - q)), abs=0.05)
    # without the skip the score would start about 17 logits lower, at the dead weights' 4e-10
    assert math.log(q / (1 - q)) - math.log(4e-10) > 15
    assert auto_init([torch.zeros(10)]) == -20.0
