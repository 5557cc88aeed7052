"""ΔT against hand-worked numbers, and its errors."""
import pytest

from adapmtl.errors import AdapMTLError
from adapmtl.metrics import HIGHER_IS_BETTER, MetricError, delta_t

SNIP_SEG = {"miou": 18.96, "pixel_acc": 46.93}
DENSE_SEG = {"miou": 19.94, "pixel_acc": 48.71}


def test_reference_example_snip_segmentation():
    # docs/method.md §4: (18.96−19.94)/19.94 + (46.93−48.71)/48.71 = −8.57 %
    result = delta_t({"segment_semantic": SNIP_SEG}, {"segment_semantic": DENSE_SEG})
    assert result.per_task["segment_semantic"] == pytest.approx(-8.569025, abs=1e-5)
    assert result.overall == pytest.approx(-8.569025, abs=1e-5)


def test_sum_over_metrics_mean_over_tasks_with_lower_is_better_flipped():
    results = {
        "segment_semantic": SNIP_SEG,
        "depth_zbuffer": {"abs_err": 0.6, "rel_err": 0.25},  # abs_err 20 % lower: +20
        "normal": {"angle_mean": 22.0, "within_30": 66.0},  # −(22−20)/20 = −10; (66−60)/60 = +10
    }
    baseline = {
        "segment_semantic": DENSE_SEG,
        "depth_zbuffer": {"abs_err": 0.75, "rel_err": 0.25},
        "normal": {"angle_mean": 20.0, "within_30": 60.0},
    }
    result = delta_t(results, baseline)
    assert result.per_task["depth_zbuffer"] == pytest.approx(20.0)
    assert result.per_task["normal"] == pytest.approx(0.0, abs=1e-12)
    assert result.overall == pytest.approx((-8.569025 + 20.0 + 0.0) / 3, abs=1e-5)


def test_taskonomy_cosine_similarity_counts_higher_as_better():
    # the original code added cosine similarity to an error sum; here 0.8 vs 0.5 is +60 %
    result = delta_t({"normal": {"cosine_similarity": 0.8}}, {"normal": {"cosine_similarity": 0.5}})
    assert result.overall == pytest.approx(60.0)


def test_every_canonical_metric_has_a_direction():
    assert sorted(HIGHER_IS_BETTER) == sorted(
        ["miou", "pixel_acc", "angle_mean", "angle_median", "within_11_25", "within_22_5", "within_30",
         "abs_err", "rel_err", "delta_1_25", "delta_1_25_2", "delta_1_25_3",
         "cross_entropy", "cosine_similarity", "keypoint_err", "edge_err"]
    )
    lower = sorted(m for m, higher in HIGHER_IS_BETTER.items() if not higher)
    assert lower == ["abs_err", "angle_mean", "angle_median", "cross_entropy", "edge_err", "keypoint_err", "rel_err"]


def test_unknown_metric_needs_a_direction():
    with pytest.raises(MetricError, match=r"no direction known for metric\(s\) \['fps', 'rmse'\]"):
        delta_t({"t": {"rmse": 1.0, "fps": 2.0}}, {"t": {"rmse": 2.0, "fps": 1.0}})
    result = delta_t({"t": {"rmse": 1.0, "fps": 2.0}}, {"t": {"rmse": 2.0, "fps": 1.0}},
                     higher_is_better={"rmse": False, "fps": True})
    assert result.overall == pytest.approx(50.0 + 100.0)


@pytest.mark.parametrize(
    "results, baseline, message",
    [
        ({"a": {"miou": 1.0}}, {"a": {"miou": 0.0}}, r"baseline\['a'\]\['miou'\] is 0"),
        ({"a": {"miou": 1.0}, "b": {"miou": 1.0}}, {"a": {"miou": 1.0}}, r"only in results \['b'\]"),
        ({"a": {"miou": 1.0}}, {"a": {"miou": 1.0, "pixel_acc": 2.0}}, r"metrics of task 'a' differ: .*only in baseline \['pixel_acc'\]"),
        ({"a": {"miou": float("nan")}}, {"a": {"miou": 1.0}}, r"results\['a'\]\['miou'\] must be finite"),
        ({"a": {"miou": "high"}}, {"a": {"miou": 1.0}}, r"must be a number, got 'high'"),
        ({}, {}, "no tasks"),
    ],
)
def test_errors_say_what_and_where(results, baseline, message):
    with pytest.raises(MetricError, match=message) as info:
        delta_t(results, baseline)
    assert isinstance(info.value, AdapMTLError)
