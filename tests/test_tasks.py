"""Task losses and metrics against hand computations; masks ignore what they must."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adapmtl.errors import AdapMTLError
from adapmtl.metrics import HIGHER_IS_BETTER
from adapmtl.tasks import METRIC_SETS, TaskError, dataset_tasks, get_task, miou


def one_hot_logits(labels: torch.Tensor, k: int) -> torch.Tensor:
    """[B, H, W] labels → [B, K, H, W] logits whose argmax is the label."""
    return F.one_hot(labels, k).permute(0, 3, 1, 2).float() * 5.0


# ---------------------------------------------------------------- segmentation

SEG_TARGET = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
SEG_PRED = torch.tensor([[[0, 1, 1], [1, 0, 2]]])
# valid pairs (target→pred): 0→0, 0→1, 1→1, 1→1, 2→0; class 3 never occurs.
# TP = [1, 2, 0, 0]; union = [3, 3, 1, 0]; IoU = [1/3, 2/3, 0, —]


@pytest.mark.parametrize("over, expected", [("present", 100 / 3), ("all", 25.0), ("with_tp", 50.0)])
def test_miou_conventions_by_hand(over, expected):
    task = get_task("segment_semantic", ["miou", "pixel_acc"], num_classes=4, miou_over=over)
    acc = task.accumulator()
    acc.update(one_hot_logits(SEG_PRED, 4), SEG_TARGET)
    assert acc.compute() == pytest.approx({"miou": expected, "pixel_acc": 60.0})


def test_miou_streams_one_confusion_matrix_not_a_mean_of_batch_mious():
    # batch 1: class 0 right, class 1 wrong (pred 0); batch 2: class 1 right ×3
    t1, p1 = torch.tensor([[[0, 1]]]), torch.tensor([[[0, 0]]])
    t2, p2 = torch.tensor([[[1, 1, 1]]]), torch.tensor([[[1, 1, 1]]])
    acc = get_task("segment_semantic", ["miou", "pixel_acc"], num_classes=2).accumulator()
    acc.update(one_hot_logits(p1, 2), t1)
    acc.update(one_hot_logits(p2, 2), t2)
    # whole set: TP = [1, 3], union = [2, 4] → (1/2 + 3/4)/2 = 62.5 %; per-batch mean would be (25 + 100)/2
    assert acc.compute() == pytest.approx({"miou": 62.5, "pixel_acc": 80.0})
    assert acc.state["confusion"].tolist() == [[1, 0], [1, 3]]


def test_miou_function_on_a_confusion_matrix():
    confusion = torch.tensor([[5, 1, 0], [2, 2, 0], [0, 0, 0]])
    # IoU0 = 5/(6+7−5) = 5/8, IoU1 = 2/(4+3−2) = 2/5, class 2 empty
    assert miou(confusion, "present") == pytest.approx((5 / 8 + 2 / 5) / 2 * 100)
    assert miou(confusion, "all") == pytest.approx((5 / 8 + 2 / 5) / 3 * 100)


def test_cross_entropy_metric_and_loss_with_class_weights():
    # two classes, logits [0, ln 3] everywhere: p(1) = 3/4, p(0) = 1/4
    logits = torch.zeros(1, 2, 1, 3)
    logits[:, 1] = math.log(3.0)
    target = torch.tensor([[[1, 0, 255]]])
    plain = get_task("segment_semantic", ["cross_entropy"], num_classes=2)
    expected = (math.log(4 / 3) + math.log(4)) / 2
    assert plain.loss(logits, target).item() == pytest.approx(expected)
    acc = plain.accumulator()
    acc.update(logits, target)
    assert acc.compute()["cross_entropy"] == pytest.approx(expected)
    weighted = get_task("segment_semantic", ["cross_entropy"], num_classes=2, class_weights=[1.0, 3.0])
    expected_w = (3 * math.log(4 / 3) + 1 * math.log(4)) / 4
    assert weighted.loss(logits, target).item() == pytest.approx(expected_w)
    acc = weighted.accumulator()
    acc.update(logits, target)
    assert acc.compute()["cross_entropy"] == pytest.approx(expected_w)


def test_segmentation_loss_ignores_255():
    task = get_task("segment_semantic", "nyuv2")
    torch.manual_seed(0)
    logits = torch.randn(2, 40, 4, 4, requires_grad=True)
    target = torch.randint(0, 40, (2, 4, 4))
    target[0, :2] = 255
    task.loss(logits, target).backward()
    assert torch.all(logits.grad[0, :, :2] == 0)
    assert torch.any(logits.grad[0, :, 2:] != 0)
    valid = target != 255
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid])
    assert task.loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    nothing = torch.full((2, 4, 4), 255)
    loss = task.loss(logits, nothing)
    assert loss.item() == 0.0 and loss.requires_grad


def test_segmentation_rejects_out_of_range_labels():
    task = get_task("segment_semantic", ["miou"], num_classes=3)
    with pytest.raises(TaskError, match=r"labels must lie in \[0, 3\) or be 255.*\[7\]"):
        task.loss(torch.zeros(1, 3, 1, 2), torch.tensor([[[7, 1]]]))


# ---------------------------------------------------------------- normals

ANGLES = [0.0, 10.0, 20.0, 45.0, 90.0]


def normal_batch():
    """Five valid pixels at known angles to (0, 0, 1), predictions of length 2, one invalid pixel."""
    rad = torch.deg2rad(torch.tensor(ANGLES + [0.0]))
    pred = torch.stack([torch.sin(rad), torch.zeros(6), torch.cos(rad)]) * 2.0  # [3, 6]
    pred[:, 5] = torch.tensor([-1.0, 0.0, 0.0])  # invalid pixel: 90° off, must not count
    target = torch.tensor([0.0, 0.0, 1.0]).repeat(6, 1).T.clone()
    target[:, 5] = 0.0
    return pred.view(1, 3, 2, 3), target.view(1, 3, 2, 3)


def test_normal_metrics_by_hand():
    metrics = [*METRIC_SETS["nyuv2"]["normal"], "cosine_similarity"]
    task = get_task("normal", metrics)
    assert task.metrics == tuple(metrics)
    acc = task.accumulator()
    pred, target = normal_batch()
    acc.update(pred, target)
    result = acc.compute()
    cosines = [math.cos(math.radians(a)) for a in ANGLES]
    assert result["angle_mean"] == pytest.approx(33.0, abs=1e-5)  # inputs are float32
    assert result["angle_median"] == pytest.approx(20.0, abs=0.005)
    assert result["within_11_25"] == pytest.approx(40.0)
    assert result["within_22_5"] == pytest.approx(60.0)
    assert result["within_30"] == pytest.approx(60.0)
    assert result["cosine_similarity"] == pytest.approx(sum(cosines) / 5, abs=1e-6)


def test_normal_loss_is_one_minus_cosine_over_valid_pixels():
    task = get_task("normal", "nyuv2")
    pred, target = normal_batch()
    expected = sum(1 - math.cos(math.radians(a)) for a in ANGLES) / 5
    assert task.loss(pred, target).item() == pytest.approx(expected, rel=1e-6)
    pred[0, :, 1, 2] = torch.tensor([5.0, 5.0, -5.0])  # the invalid pixel: no effect
    assert task.loss(pred, target).item() == pytest.approx(expected, rel=1e-6)


def test_angle_median_from_histogram_is_within_its_documented_error():
    torch.manual_seed(1)
    acc = get_task("normal", ["angle_median", "angle_mean"]).accumulator()
    all_angles = []
    for n in (1000, 777):  # two batches, odd total
        pred = torch.randn(1, 3, 1, n)
        target = F.normalize(torch.randn(1, 3, 1, n), dim=1)
        acc.update(pred, target)
        cos = F.cosine_similarity(pred, target, dim=1).double().clamp(-1, 1)
        all_angles.append(torch.rad2deg(torch.acos(cos)).flatten())
    angles = torch.cat(all_angles).numpy()
    result = acc.compute()
    assert abs(result["angle_median"] - np.median(angles)) <= 0.005
    assert result["angle_mean"] == pytest.approx(angles.mean(), abs=1e-6)
    assert acc.state["histogram"].numel() == 18_000  # memory fixed, whatever the set size


def test_zero_length_prediction_counts_as_ninety_degrees():
    acc = get_task("normal", ["angle_mean"]).accumulator()
    acc.update(torch.zeros(1, 3, 1, 1), torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1))
    assert acc.compute() == {"angle_mean": 90.0}


# ---------------------------------------------------------------- depth

def depth_batch():
    target = torch.tensor([1.0, 2.0, 4.0, 1.0, 0.0]).view(1, 1, 1, 5)  # last pixel invalid
    pred = torch.tensor([1.1, 3.0, 2.0, -1.0, 5.0]).view(1, 1, 1, 5)
    return pred, target


def test_depth_metrics_by_hand_over_valid_pixels_only():
    acc = get_task("depth_zbuffer", "nyuv2").accumulator()
    acc.update(*depth_batch())
    # |p−g| = 0.1, 1, 2, 2; |p−g|/g = 0.1, 0.5, 0.5, 2; ratios 1.1, 1.5, 2, ∞ (negative prediction)
    assert acc.compute() == pytest.approx(
        {"abs_err": 1.275, "rel_err": 0.775, "delta_1_25": 25.0, "delta_1_25_2": 50.0, "delta_1_25_3": 50.0}
    )


def test_depth_loss_is_l1_over_valid_pixels():
    task = get_task("depth_zbuffer", "taskonomy")
    pred, target = depth_batch()
    pred.requires_grad_(True)
    loss = task.loss(pred, target)
    assert loss.item() == pytest.approx(1.275)
    loss.backward()
    assert pred.grad[0, 0, 0, 4] == 0
    acc = task.accumulator()
    acc.update(pred, target)
    assert acc.compute() == pytest.approx({"abs_err": 1.275})


# ---------------------------------------------------------------- keypoints, edges

@pytest.mark.parametrize("name, metric", [("keypoints2d", "keypoint_err"), ("edge_texture", "edge_err")])
def test_l1_map_error_over_every_pixel_of_the_set(name, metric):
    task = get_task(name, "taskonomy")
    acc = task.accumulator()
    pred1, target1 = torch.tensor([0.5, 0.2]).view(1, 1, 1, 2), torch.tensor([0.0, 0.2]).view(1, 1, 1, 2)
    acc.update(pred1, target1)
    acc.update(torch.full((1, 1, 2, 2), 0.3), torch.full((1, 1, 2, 2), 0.3))
    # 0.5 of error over 6 pixels (a mean of batch means would say 0.125)
    assert acc.compute() == pytest.approx({metric: 0.5 / 6})
    assert task.loss(pred1, target1).item() == pytest.approx(0.25)


# ---------------------------------------------------------------- shared behaviour

def test_native_resolution_predictions_are_upsampled_bilinearly():
    task = get_task("depth_zbuffer", "nyuv2")
    torch.manual_seed(0)
    small = torch.rand(2, 1, 3, 4)
    target = torch.rand(2, 1, 12, 16) + 0.5
    upsampled = F.interpolate(small, size=(12, 16), mode="bilinear", align_corners=False)
    assert task.loss(small, target).item() == pytest.approx(task.loss(upsampled, target).item())


@pytest.mark.parametrize(
    "name, pred, target, message",
    [
        ("normal", torch.zeros(1, 1, 2, 2), torch.zeros(1, 3, 2, 2), r"normal: prediction must be \[B, 3, h, w\], got \[1, 1, 2, 2\]"),
        ("depth_zbuffer", torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2), r"target must be \[B, 1, H, W\]"),
        ("segment_semantic", torch.zeros(2, 40, 2, 2), torch.zeros(1, 2, 2, dtype=torch.int64), r"batch size 2"),
        ("segment_semantic", torch.zeros(1, 40, 2, 2), torch.zeros(1, 2, 2), r"int64"),
    ],
)
def test_shape_errors_name_the_task_and_the_expected_shape(name, pred, target, message):
    with pytest.raises(TaskError, match=message):
        get_task(name, "nyuv2").loss(pred, target)


def test_dataset_task_tables_and_directions():
    nyu = dataset_tasks("nyuv2")
    assert {t: task.out_channels for t, task in nyu.items()} == {"segment_semantic": 40, "normal": 3, "depth_zbuffer": 1}
    taskonomy = dataset_tasks("taskonomy")
    assert {t: task.out_channels for t, task in taskonomy.items()} == {
        "segment_semantic": 17, "normal": 3, "depth_zbuffer": 1, "keypoints2d": 1, "edge_texture": 1,
    }
    assert {t: task.metrics for t, task in taskonomy.items()} == {
        "segment_semantic": ("cross_entropy",), "normal": ("cosine_similarity",), "depth_zbuffer": ("abs_err",),
        "keypoints2d": ("keypoint_err",), "edge_texture": ("edge_err",),
    }
    assert nyu["depth_zbuffer"].directions == {
        "abs_err": False, "rel_err": False, "delta_1_25": True, "delta_1_25_2": True, "delta_1_25_3": True,
    }
    every_supported = {m for t in list(nyu.values()) + list(taskonomy.values()) for m in t.supported_metrics}
    assert every_supported == set(HIGHER_IS_BETTER)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: get_task("keypoints2d", "nyuv2"), "nyuv2 has no keypoints2d task"),
        (lambda: get_task("segment_semantic", ["miou"]), "num_classes is required"),
        (lambda: get_task("normal", "nyuv2", num_classes=3), "apply to segment_semantic only"),
        (lambda: get_task("normal", ["miou"]), r"normal: metrics must be distinct names from \['angle_mean'"),
        (lambda: get_task("depth", "nyuv2"), "unknown task 'depth'"),
        (lambda: get_task("normal", "cityscapes"), "unknown dataset 'cityscapes'"),
        (lambda: dataset_tasks("nyu"), "unknown dataset 'nyu'"),
        (lambda: get_task("segment_semantic", "nyuv2", miou_over="mean"), "miou_over must be one of"),
        (lambda: get_task("depth_zbuffer", "nyuv2").accumulator().compute(), "no valid pixels"),
    ],
)
def test_task_errors(call, message):
    with pytest.raises(TaskError, match=message) as info:
        call()
    assert isinstance(info.value, AdapMTLError)


def test_half_precision_predictions_do_not_overflow_the_pixel_count():
    # 70,000 valid pixels: more than float16 can count (max 65,504)
    task = get_task("depth_zbuffer", "nyuv2")
    pred = torch.full((1, 1, 70, 1000), 2.0, dtype=torch.float16)
    target = torch.full((1, 1, 70, 1000), 1.5)
    assert task.loss(pred, target).item() == pytest.approx(0.5)
    seg = get_task("segment_semantic", "nyuv2")
    logits = torch.zeros(1, 40, 70, 1000, dtype=torch.float16)
    assert seg.loss(logits, torch.zeros(1, 70, 1000, dtype=torch.int64)).item() == pytest.approx(math.log(40), rel=1e-3)
