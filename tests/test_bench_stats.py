"""The bench's statistics: intervals, the tie rule, the noise floor and the sanity checks, on plain
numbers worked out by hand."""
import pytest
import torch

from adapmtl.engine import load_config
from adapmtl.experiments import component_numel
from adapmtl.experiments.stats import (
    Check, Interval, check_convergence, check_heads_share, check_random_worse, mean_interval, noise_floor,
    paired_differences, setting_label, t_quantile_975, verdict,
)
from tests.engine_helpers import TINY


def test_interval_is_the_t_interval_over_seeds():
    # [1, 2, 6]: mean 3, s = √((4 + 1 + 9) / 2) = √7, s/√3 = 1.527525, t(0.975, 2) = 4.303
    interval = mean_interval([1.0, 2.0, 6.0])
    half = 4.303 * 7 ** 0.5 / 3 ** 0.5
    assert (interval.mean, interval.n) == (3.0, 3)
    assert interval.low == pytest.approx(3 - half) and interval.high == pytest.approx(3 + half)
    assert interval.low == pytest.approx(-3.57294, abs=1e-5)  # 3 − 4.303 · 1.527525
    assert interval.text() == "+3.00 [-3.57, +9.57]"
    single = mean_interval([2.5])
    assert (single.low, single.high, single.text()) == (None, None, "+2.50 [n = 1]")
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval([])
    with pytest.raises(ValueError, match="finite"):
        mean_interval([1.0, float("nan")])


def test_t_quantiles_come_from_the_table_and_err_on_the_wide_side():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(4) == 2.776
    assert t_quantile_975(35) == 2.042  # between 30 and 40: 30's quantile, the larger
    assert t_quantile_975(1000) == 1.960
    with pytest.raises(ValueError, match="degree of freedom"):
        t_quantile_975(0)


def test_tie_rule_noise_floor_or_an_interval_that_holds_zero():
    clear = Interval(3.0, 1.0, 5.0, 3)
    assert verdict(clear, floor=2.0) == "win"
    assert verdict(clear, floor=3.5) == "tie"  # |mean| within the noise floor
    assert verdict(Interval(3.0, -0.5, 6.5, 3), floor=1.0) == "tie"  # the interval holds 0
    assert verdict(Interval(-3.0, -5.0, -1.0, 3), floor=2.0) == "loss"
    assert verdict(Interval(-3.0, None, None, 1), floor=2.0) is None  # one seed: cannot tell
    assert verdict(clear, floor=None) is None


def test_noise_floor_is_the_rms_of_dense_against_dense_and_pairs_match_seeds():
    assert noise_floor([3.0, -4.0]) == pytest.approx(12.5 ** 0.5)
    assert noise_floor([]) is None
    assert paired_differences({0: 5.0, 1: 2.0, 2: 1.0}, {0: 1.0, 1: 4.0}) == {0: 4.0, 1: -2.0}


def test_each_check_failing_labels_the_setting_invalid():
    passing = [check_heads_share({"backbone": 30, "seg": 35, "depth": 35}, 0.7),
               check_convergence(Interval(0.5, -1.0, 2.0, 3), 2.0, 2.0),
               check_random_worse(Interval(-20.0, -25.0, -15.0, 3), 2.0, 0.9)]
    assert [c.status for c in passing] == ["pass"] * 3
    assert setting_label(passing) == "setting valid: every sanity check passes"
    failing = [check_heads_share({"backbone": 31, "seg": 35, "depth": 34}, 0.7),  # 69 %
               check_convergence(Interval(2.5, 1.0, 4.0, 3), 2.0, 2.0),  # more steps move dense by 2.5 > 2
               check_random_worse(Interval(-20.0, -25.0, -1.5, 3), 2.0, 0.9)]  # high end −1.5 above −2
    for i, failed in enumerate(failing):
        checks = passing[:i] + [failed] + passing[i + 1:]
        assert failed.status == "fail"
        assert setting_label(checks) == f"setting invalid: {failed.problem}"
    assert "heads hold 69.0 %" in failing[0].problem
    assert "dense reference has not converged" in failing[1].problem
    assert "random at 0.9 is not clearly worse than dense" in failing[2].problem
    unchecked = check_convergence(None, None, None)
    assert unchecked.status == "not checked"
    assert setting_label(passing + [unchecked]).startswith("setting not fully checked: the dense reference's")
    assert setting_label([*passing, Check("x", "", "", "not checked")]) == "setting valid: every sanity check passes"


def test_heads_share_counts_each_components_prunable_weights(tmp_path):
    config = load_config(None, [*TINY, "model.width=0.125", "model.head_channels=8"])
    numel = component_numel(config)
    # an ASPP head: 4 branches of conv3×3 (64 → 8), conv1×1 (8 → 8), conv1×1 (8 → outputs); biases are not pruned
    assert numel["segment_semantic"] == 4 * (9 * 64 * 8 + 8 * 8 + 8 * 8)  # 8 synthetic classes
    assert numel["normal"] == 4 * (9 * 64 * 8 + 8 * 8 + 8 * 3)
    assert numel["depth_zbuffer"] == 4 * (9 * 64 * 8 + 8 * 8 + 8 * 1)
    from adapmtl.models import create_model
    backbone = create_model("deeplab_resnet34", {"depth_zbuffer": 1}, width=0.125, head_channels=8).backbone
    assert numel["backbone"] == sum(m.weight.numel() for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    check = check_heads_share(numel, 0.7)
    assert check.status == "fail" and check.value.startswith("14.5 %")


def test_the_headline_says_why_a_finished_runs_delta_t_is_undefined():
    from types import SimpleNamespace

    from adapmtl.experiments.aggregate import Analysis, headline

    bench = SimpleNamespace(section=SimpleNamespace(methods=["adapmtl", "snip"], targets=[0.9]))
    reason = "metric depth_zbuffer.delta_1_25 is 0 in the baseline: its relative change is undefined"
    analysis = Analysis({}, {}, None, {}, {}, {}, None, [], "setting not fully checked", {"adapmtl target=0.9": reason})
    text = headline(bench, analysis)
    assert "| adapmtl | n/a (ΔT undefined) |" in text and "| snip | missing |" in text
    assert text.endswith(f"ΔT undefined: {reason}")
