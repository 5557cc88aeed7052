"""The "paper" and "corrected" task conventions (issue 16), each against values worked out by hand
from the original code's formulas (AdaShare `get_sn_loss`/`normal_error`, TreeMTL/AdapMTL
`pixel2pixel_loss`/`pixel2pixel_metrics`)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adapmtl.tasks import (
    CONVENTIONS,
    DEFAULT_MIOU_OVER,
    PAPER_NORMAL_VECTORS,
    TaskError,
    dataset_tasks,
    get_task,
    miou,
)

NORMAL_METRICS = ["angle_mean", "angle_median", "within_11_25", "within_22_5", "within_30", "cosine_similarity"]


def as_map(vectors: torch.Tensor) -> torch.Tensor:
    """[N, 3] vectors → a [1, 3, 1, N] map."""
    return vectors.T.reshape(1, 3, 1, -1).contiguous()


def normal_results(convention: str, pred: torch.Tensor, target: torch.Tensor, dataset: str = "nyuv2") -> dict:
    acc = get_task("normal", NORMAL_METRICS, convention=convention, dataset=dataset).accumulator()
    acc.update(pred, target)
    return acc.compute()


# ---------------------------------------------------------------- the convention names


def test_conventions_are_one_tuple_and_checked():
    assert CONVENTIONS == ("paper", "corrected")
    assert dict(DEFAULT_MIOU_OVER) == {"paper": "with_tp", "corrected": "present"}
    assert dict(PAPER_NORMAL_VECTORS) == {"nyuv2": "colour", "taskonomy": "unit"}
    for name in ("segment_semantic", "normal", "depth_zbuffer"):
        assert get_task(name, "nyuv2").convention == "corrected"
        assert get_task(name, "nyuv2", convention="paper").convention == "paper"
        with pytest.raises(TaskError, match=rf"{name}: convention must be one of \['paper', 'corrected'\], got 'original'"):
            get_task(name, "nyuv2", convention="original")
    tasks = dataset_tasks("taskonomy", convention="paper")
    assert {t.convention for t in tasks.values()} == {"paper"}
    assert {t.name: t.accumulator().convention for t in tasks.values()} == {t: "paper" for t in tasks}
    assert "convention='paper'" in repr(tasks["depth_zbuffer"])


# ---------------------------------------------------------------- 1. normals


def tilted(n: torch.Tensor, u: torch.Tensor, degrees: float) -> torch.Tensor:
    """n rotated by `degrees` toward u (u ⊥ n, both unit)."""
    t = math.radians(degrees)
    return n * math.cos(t) + u * math.sin(t)


def family_normal(s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A unit normal n with n·(1, 1, 1) = s and the unit tilt direction u = n × (1, 1, 1) / |·|."""
    e1 = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64) / math.sqrt(3)
    e2 = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64) / math.sqrt(2)
    a = s / math.sqrt(3)
    n = a * e1 + math.sqrt(1 - a * a) * e2
    u = torch.linalg.cross(n, torch.ones(3, dtype=torch.float64))
    return n, u / u.norm()


def paper_angle_by_hand(s: float, degrees: float) -> float:
    """The original's angle between the colours c = 127.5 (1 + n) and 127.5 (1 + m), m = n tilted by
    `degrees` toward u ⊥ n, u ⊥ (1, 1, 1). With 1 = (1, 1, 1), s = n·1, c = cos θ:
    (1 + n)·(1 + m) = 3 + s + (1 + s) c,  |1 + n|² = 4 + 2 s,  |1 + m|² = 4 + 2 s c
    (u·1 = u·n = 0, |1|² = 3), so cos φ = (3 + s + (1 + s) c) / √((4 + 2 s)(4 + 2 s c))."""
    c = math.cos(math.radians(degrees))
    return math.degrees(math.acos((3 + s + (1 + s) * c) / math.sqrt((4 + 2 * s) * (4 + 2 * s * c))))


@pytest.mark.parametrize("true_angle, about", [(15.0, 7.0), (30.0, 14.1)])
def test_paper_normals_read_about_half_the_true_angle(true_angle, about):
    s = 0.25
    n, u = family_normal(s)
    m = tilted(n, u, true_angle)
    expected = paper_angle_by_hand(s, true_angle)  # 7.0612° for 15°, 14.0623° for 30°
    assert expected == pytest.approx(about, abs=0.07)
    target = as_map(n[None].float())
    # under "paper" the head predicts the colour's direction: any positive multiple of 127.5 (1 + m)
    colour_pred = as_map(((m + 1.0) * 127.5 * 3.0)[None].float())
    paper = normal_results("paper", colour_pred, target)
    assert paper["angle_mean"] == pytest.approx(expected, abs=2e-3)
    assert paper["angle_median"] == pytest.approx(expected, abs=0.005 + 2e-3)
    assert paper["cosine_similarity"] == pytest.approx(math.cos(math.radians(expected)), abs=1e-6)
    loss = get_task("normal", "nyuv2", convention="paper").loss(colour_pred, target)
    assert loss.item() == pytest.approx(1 - math.cos(math.radians(expected)), abs=1e-6)
    # "corrected": the same error, the prediction being the normal m itself, reads its true angle
    corrected = normal_results("corrected", as_map(m[None].float()), target)
    assert corrected["angle_mean"] == pytest.approx(true_angle, abs=2e-3)


def test_paper_normal_angles_depend_on_the_normal():
    # n = (1, 1, 1)/√3, any tilt u ⊥ n is ⊥ 1 + n: tan φ = sin θ / (√3 + cos θ)
    n = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64) / math.sqrt(3)
    u = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64) / math.sqrt(2)
    by_hand = {t: math.degrees(math.atan(math.sin(math.radians(t)) / (math.sqrt(3) + math.cos(math.radians(t)))))
               for t in (15.0, 30.0)}
    assert by_hand[15.0] == pytest.approx(5.4797, abs=1e-4) and by_hand[30.0] == pytest.approx(10.8934, abs=1e-4)
    preds = torch.stack([(tilted(n, u, t) + 1.0) * 127.5 for t in (15.0, 30.0)]).float()
    acc = get_task("normal", ["angle_mean"], convention="paper").accumulator()
    acc.update(as_map(preds), as_map(n.repeat(2, 1).float()))
    assert acc.compute()["angle_mean"] == pytest.approx((by_hand[15.0] + by_hand[30.0]) / 2, abs=2e-3)
    # opposite normals ±(1, 1, 1)/√3 have colours 127.5 (1 ± 1/√3)(1, 1, 1): one direction, 0° apart
    opposite = as_map(((-n + 1.0) * 127.5)[None].float())
    assert normal_results("paper", opposite, as_map(n[None].float()))["angle_mean"] == pytest.approx(0.0, abs=1e-3)
    corrected = normal_results("corrected", as_map(-n[None].float()), as_map(n[None].float()))
    assert corrected["angle_mean"] == pytest.approx(180.0, abs=1e-3)


def test_paper_normals_reproduce_the_original_formula_on_random_pixels():
    """The original, in numpy: gt = 8-bit colour, keep max(gt) != 255, normalise both, arccos of the dot."""
    rng = np.random.default_rng(0)
    n = rng.normal(size=(500, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    pred = rng.normal(size=(500, 3)) * 40 + 127.5
    colour = (n + 1) * 127.5
    keep = np.round(colour).max(axis=1) != 255
    gt = colour[keep] / np.linalg.norm(colour[keep], axis=1, keepdims=True)
    p = pred[keep] / np.linalg.norm(pred[keep], axis=1, keepdims=True)
    angles = np.degrees(np.arccos(np.clip((gt * p).sum(1), -1, 1)))
    pred_map, target_map = as_map(torch.tensor(pred, dtype=torch.float32)), as_map(torch.tensor(n, dtype=torch.float32))
    result = normal_results("paper", pred_map, target_map)
    assert result["angle_mean"] == pytest.approx(angles.mean(), abs=1e-3)
    assert result["angle_median"] == pytest.approx(np.median(angles), abs=0.005 + 1e-3)
    for name, threshold in (("within_11_25", 11.25), ("within_22_5", 22.5), ("within_30", 30.0)):
        assert result[name] == pytest.approx(np.mean(angles <= threshold) * 100, abs=1e-6)
    loss = get_task("normal", "nyuv2", convention="paper").loss(pred_map, target_map)
    assert loss.item() == pytest.approx(1 - (gt * p).sum(1).mean(), abs=1e-6)


def test_paper_drops_normals_whose_colour_has_a_channel_at_255():
    # (0, 0, 1) → colour (127.5, 127.5, 255): the original's `gt.max(dim=1)[0] != 255` drops it;
    # 10° off +z → blue 127.5 (1 + cos 10°) = 253.06: kept
    n_axis = torch.tensor([0.0, 0.0, 1.0])
    n_tilt = torch.tensor([math.sin(math.radians(10)), 0.0, math.cos(math.radians(10))])
    target = as_map(torch.stack([n_axis, n_tilt]))
    pred = as_map(torch.stack([(n_tilt + 1) * 127.5, (n_tilt + 1) * 127.5]))  # pixel 0 wrong, pixel 1 exact
    paper = normal_results("paper", pred, target)
    assert paper["angle_mean"] == pytest.approx(0.0, abs=1e-3)  # only the exact pixel 1 counts
    assert get_task("normal", "nyuv2", convention="paper").loss(pred, target).item() == pytest.approx(0.0, abs=1e-6)
    corrected = normal_results("corrected", as_map(torch.stack([n_tilt, n_tilt])), target)
    assert corrected["angle_mean"] == pytest.approx(5.0, abs=2e-3)  # (10° + 0°) / 2


def test_paper_taskonomy_normals_are_compared_as_decoded_unit_vectors():
    # AdaShare's Taskonomy loader decodes raw / 255 · 2 − 1 before the same loss and metric code
    torch.manual_seed(0)
    target = F.normalize(torch.randn(1, 3, 4, 4), dim=1)
    pred = torch.randn(1, 3, 4, 4)
    paper = normal_results("paper", pred, target, dataset="taskonomy")
    assert paper == pytest.approx(normal_results("corrected", pred, target))
    assert get_task("normal", "taskonomy", convention="paper").loss(pred, target).item() == pytest.approx(
        get_task("normal", "taskonomy").loss(pred, target).item())
    assert get_task("normal", ["cosine_similarity"], convention="paper", dataset="taskonomy").paper_vectors == "unit"
    assert get_task("normal", ["cosine_similarity"], convention="paper").paper_vectors == "colour"


# ---------------------------------------------------------------- 2. mIoU


def forty_class_confusion_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Classes 0–29: 10 pixels right and 71 predicted as class 30 + c mod 10 → TP 10, FN 71, FP 0,
    IoU 10/81. Classes 30–39: never in the targets, predicted 3 × 71 times, never right → TP 0,
    union 213: present, never hit."""
    target, pred = [], []
    for c in range(30):
        target += [c] * 81
        pred += [c] * 10 + [30 + c % 10] * 71
    target = torch.tensor(target).view(1, 1, -1)
    logits = F.one_hot(torch.tensor(pred), 40).T.float().view(1, 40, 1, -1) * 5.0
    return logits, target


def test_miou_with_tp_is_the_paper_default_and_present_the_corrected_one():
    logits, target = forty_class_confusion_batch()
    present = 100 * 30 * (10 / 81) / 40  # 9.259 %
    with_tp = 100 * 10 / 81  # 12.346 %
    assert round(present, 2) == 9.26 and round(with_tp, 2) == 12.35
    results = {}
    for convention in CONVENTIONS:
        acc = get_task("segment_semantic", "nyuv2", convention=convention).accumulator()
        acc.update(logits, target)
        results[convention] = acc.compute()
        assert results[convention]["pixel_acc"] == pytest.approx(100 * 300 / 2430)
    assert results["paper"]["miou"] == pytest.approx(with_tp)
    assert results["corrected"]["miou"] == pytest.approx(present)
    # an explicit miou_over wins over the convention's default
    acc = get_task("segment_semantic", "nyuv2", convention="paper", miou_over="present").accumulator()
    acc.update(logits, target)
    assert acc.compute()["miou"] == pytest.approx(present)
    confusion = acc.state["confusion"]
    assert miou(confusion, "with_tp") == pytest.approx(with_tp) and miou(confusion, "present") == pytest.approx(present)
    assert get_task("segment_semantic", "nyuv2", convention="paper").miou_over == "with_tp"
    assert get_task("segment_semantic", "nyuv2").miou_over == "present"


# ---------------------------------------------------------------- 3. resolution

# A 1/8-resolution prediction of an 8 × 16 target made of two 8 × 8 blocks (values 1 | 2).
# Bilinear upsampling (align_corners=False, factor 8) reads column x at source (x + 0.5)/8 − 0.5,
# clamped to [0, 1]: columns 0–3 take block 0, 12–15 block 1, and 4–11 the blend weights below.
BLEND = [0.0] * 4 + [(x + 0.5) / 8 - 0.5 for x in range(4, 12)] + [1.0] * 4  # 0.0625, 0.1875, … 0.9375


def two_blocks(left: float, right: float) -> torch.Tensor:
    return torch.tensor([left] * 8 + [right] * 8).repeat(8, 1)  # [8, 16]


def test_ideal_eighth_resolution_depth():
    pred = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2)
    target = two_blocks(1.0, 2.0).view(1, 1, 8, 16)
    upsampled = [1.0 + w for w in BLEND]
    assert F.interpolate(pred, size=(8, 16), mode="bilinear", align_corners=False)[0, 0, 0].tolist() == upsampled
    # corrected: |1 + w − g| is w on columns 4–7 (g = 1) and 1 − w on 8–11 (g = 2): 1.0 + 1.0 over 16 columns
    abs_err = 2.0 / 16  # 0.125 m
    rel_err = (1.0 / 1 + 1.0 / 2) / 16  # 0.09375
    metrics = ["abs_err", "rel_err", "delta_1_25"]
    expected = {
        "paper": ({"abs_err": 0.0, "rel_err": 0.0, "delta_1_25": 100.0}, 0.0),
        # max(p/g, g/p) < 1.25 fails for 1.3125, 1.4375 (g = 1) and 1.5625 (g = 2): 3 of 16 columns
        "corrected": ({"abs_err": abs_err, "rel_err": rel_err, "delta_1_25": 100 * 13 / 16}, abs_err),
    }
    for convention, (values, loss) in expected.items():
        task = get_task("depth_zbuffer", metrics, convention=convention)
        assert task.loss(pred, target).item() == pytest.approx(loss, abs=1e-7)
        acc = task.accumulator()
        acc.update(pred, target)
        assert acc.compute() == pytest.approx(values)


def test_paper_loss_samples_the_target_by_legacy_nearest_neighbour():
    # F.interpolate(gt, size=(1, 2)) reads source column floor(x · 16/2): columns 0 and 8
    target = torch.arange(16.0).add(1.0).repeat(8, 1).view(1, 1, 8, 16)  # column x holds x + 1
    task = get_task("depth_zbuffer", ["abs_err"], convention="paper")
    assert task.loss(torch.tensor([1.0, 9.0]).view(1, 1, 1, 2), target).item() == 0.0
    assert task.loss(torch.tensor([4.0, 13.0]).view(1, 1, 1, 2), target).item() == pytest.approx(3.5)
    # a prediction already at the target's resolution is compared as it is, under either convention
    full = target + 0.5
    for convention in CONVENTIONS:
        assert get_task("depth_zbuffer", ["abs_err"], convention=convention).loss(full, target).item() == pytest.approx(0.5)


def test_ideal_eighth_resolution_segmentation():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]]).T.reshape(1, 2, 1, 2)  # block 0 → class 0, block 1 → class 1
    target = two_blocks(0, 1).long().view(1, 8, 16)
    # paper: every pixel's cross-entropy is log(1 + e^−5), at 1/8 resolution as at full resolution
    paper_ce = math.log1p(math.exp(-5.0))
    # corrected: logits (5(1 − w), 5w); CE = log(1 + e^{±5(1 − 2w)}), sign + for class 0 columns
    corrected_ce = sum(math.log1p(math.exp(5 * (2 * w - 1) if x < 8 else 5 * (1 - 2 * w))) for x, w in enumerate(BLEND)) / 16
    assert corrected_ce == pytest.approx(0.08172, abs=1e-5)  # vs paper 0.00672
    for convention, ce in (("paper", paper_ce), ("corrected", corrected_ce)):
        task = get_task("segment_semantic", ["miou", "pixel_acc", "cross_entropy"], num_classes=2, convention=convention)
        assert task.loss(logits, target).item() == pytest.approx(ce, rel=1e-5)
        acc = task.accumulator()
        acc.update(logits, target)
        # the blended logits change sides exactly at the block edge (w = 1/2 between columns 7 and 8)
        assert acc.compute() == pytest.approx({"miou": 100.0, "pixel_acc": 100.0, "cross_entropy": ce}, rel=1e-5)


def test_ideal_eighth_resolution_normals():
    torch.manual_seed(0)
    blocks = F.normalize(torch.randn(1, 3, 3, 4), dim=1)  # a 3 × 4 prediction of a 24 × 32 target
    blocks[0, :, 0, 0] = torch.tensor([0.0, 0.0, 1.0])  # one block saturated (blue 255): the original drops it
    target = blocks.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
    paper = get_task("normal", NORMAL_METRICS, convention="paper")
    colour = (blocks + 1.0) * 127.5
    assert paper.loss(colour, target).item() == pytest.approx(0.0, abs=1e-6)
    acc = paper.accumulator()
    acc.update(colour, target)
    result = acc.compute()
    assert result["angle_mean"] == pytest.approx(0.0, abs=0.02)
    assert result["within_11_25"] == 100.0
    assert acc.state["count"].item() == 11 * 64  # 11 blocks of 8 × 8 pixels, the saturated one dropped
    # corrected, in one dimension: blocks n0 = (0, 0, 1) | n1 = (1, 0, 0); the blend (1 − w) n0 + w n1
    # has cosine (1 − w)/√((1 − w)² + w²) with n0 (columns < 8) and w/√(…) with n1
    n0, n1 = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0])
    pred = torch.stack([n0, n1], dim=1).view(1, 3, 1, 2)
    target = torch.cat([n0.view(3, 1, 1).expand(3, 8, 8), n1.view(3, 1, 1).expand(3, 8, 8)], dim=2)[None]
    cos = [((1 - w) if x < 8 else w) / math.hypot(1 - w, w) for x, w in enumerate(BLEND)]
    corrected_loss = sum(1 - c for c in cos) / 16
    assert corrected_loss == pytest.approx(0.04101, abs=1e-5)
    assert get_task("normal", "nyuv2").loss(pred, target).item() == pytest.approx(corrected_loss, rel=1e-5)
    mean_angle = sum(math.degrees(math.acos(c)) for c in cos) / 16
    assert mean_angle == pytest.approx(9.891, abs=1e-3)
    assert normal_results("corrected", pred, target)["angle_mean"] == pytest.approx(mean_angle, abs=1e-3)


# ---------------------------------------------------------------- 4. the entry point


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: get_task("normal", "nyuv2", miou_over="present"), "apply to segment_semantic only"),
        (lambda: get_task("normal", "nyuv2", convention="paper", dataset="cityscapes"), "unknown dataset 'cityscapes'"),
        (lambda: dataset_tasks("nyuv2", convention="Paper"), "convention must be one of"),
        (lambda: get_task("segment_semantic", "nyuv2", convention="paper", miou_over="mean"), "miou_over must be one of"),
    ],
)
def test_entry_point_errors(call, message):
    with pytest.raises(TaskError, match=message):
        call()


def test_entry_point_as_the_engine_calls_it():
    # a list of metrics, explicit classes, the run's convention and its dataset
    tasks = {name: get_task(name, list(metrics), num_classes=13 if name == "segment_semantic" else None,
                            convention="paper", miou_over=None, dataset="nyuv2")
             for name, metrics in (("segment_semantic", ["miou", "pixel_acc"]), ("normal", ["angle_mean"]),
                                   ("depth_zbuffer", ["abs_err"]))}
    assert tasks["segment_semantic"].out_channels == 13 and tasks["segment_semantic"].miou_over == "with_tp"
    assert tasks["normal"].paper_vectors == "colour"
    assert all(t.convention == "paper" for t in tasks.values())
