"""Tasks by name and dataset: what the engine asks for.

    task = get_task("depth_zbuffer", metrics="nyuv2")      # or metrics=["abs_err", "rel_err"]
    loss = task.loss(pred, target)                          # scalar, differentiable
    acc = task.accumulator(); acc.update(pred, target); acc.compute()  # {metric: float}
    task.directions                                          # {metric: higher_is_better}
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Sequence

from torch import Tensor

from adapmtl.tasks.base import Task, TaskError
from adapmtl.tasks.dense import EdgesTask, KeypointsTask
from adapmtl.tasks.depth import DepthTask
from adapmtl.tasks.normal import NormalTask
from adapmtl.tasks.segmentation import MiouOver, SegmentationTask

TASK_NAMES: tuple[str, ...] = ("segment_semantic", "normal", "depth_zbuffer", "keypoints2d", "edge_texture")

METRIC_SETS: Mapping[str, Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "nyuv2": {
            "segment_semantic": ("miou", "pixel_acc"),
            "normal": ("angle_mean", "angle_median", "within_11_25", "within_22_5", "within_30"),
            "depth_zbuffer": ("abs_err", "rel_err", "delta_1_25", "delta_1_25_2", "delta_1_25_3"),
        },
        "taskonomy": {
            "segment_semantic": ("cross_entropy",),
            "normal": ("cosine_similarity",),
            "depth_zbuffer": ("abs_err",),
            "keypoints2d": ("keypoint_err",),
            "edge_texture": ("edge_err",),
        },
    }
)
"""The metrics each dataset reports per task, as in the paper (its tasks, in order)."""

SEGMENTATION_CLASSES: Mapping[str, int] = MappingProxyType({"nyuv2": 40, "taskonomy": 17})

_OTHER_TASKS: dict[str, type[Task]] = {
    "normal": NormalTask,
    "depth_zbuffer": DepthTask,
    "keypoints2d": KeypointsTask,
    "edge_texture": EdgesTask,
}


def get_task(
    name: str,
    metrics: str | Sequence[str] = "nyuv2",
    *,
    num_classes: int | None = None,
    class_weights: Tensor | Sequence[float] | None = None,
    miou_over: MiouOver = "present",
) -> Task:
    """The task `name` (one of TASK_NAMES) with the metric set `metrics`.

    metrics: a dataset name ("nyuv2", "taskonomy": its metrics for this task, see
        METRIC_SETS) or a list of metric names the task supports.
    num_classes: segmentation classes; defaults to the dataset's (40 NYU-v2, 17 Taskonomy),
        required when `metrics` is a list.
    class_weights, miou_over: segmentation only (see `SegmentationTask`).
    """
    if name not in TASK_NAMES:
        raise TaskError(f"unknown task {name!r}; expected one of {list(TASK_NAMES)}")
    if not isinstance(metrics, str) and not (
        isinstance(metrics, Sequence) and all(isinstance(m, str) for m in metrics)
    ):
        raise TaskError(f"{name}: metrics must be a dataset name or a list of metric names, got {metrics!r}")
    dataset = metrics if isinstance(metrics, str) else None
    if dataset is not None:
        if dataset not in METRIC_SETS:
            raise TaskError(f"unknown dataset {dataset!r} for metrics; expected one of {list(METRIC_SETS)} or a list of metric names")
        if name not in METRIC_SETS[dataset]:
            raise TaskError(f"{dataset} has no {name} task (it has {list(METRIC_SETS[dataset])}); pass a list of metric names")
        metrics = METRIC_SETS[dataset][name]
    if name == "segment_semantic":
        if num_classes is None:
            if dataset is None:
                raise TaskError("segment_semantic: num_classes is required when metrics is a list of names")
            num_classes = SEGMENTATION_CLASSES[dataset]
        return SegmentationTask(num_classes, metrics, class_weights=class_weights, miou_over=miou_over)
    if num_classes is not None or class_weights is not None or miou_over != "present":
        raise TaskError(f"{name}: num_classes, class_weights and miou_over apply to segment_semantic only")
    return _OTHER_TASKS[name](metrics)


def dataset_tasks(
    dataset: str,
    *,
    class_weights: Tensor | Sequence[float] | None = None,
    miou_over: MiouOver = "present",
) -> dict[str, Task]:
    """{task name: Task} for every task of `dataset` ("nyuv2" or "taskonomy"), with its metrics.

    `{t: task.out_channels for t, task in dataset_tasks("nyuv2").items()}` is the task
    table `adapmtl.models.create_model` takes.
    """
    if dataset not in METRIC_SETS:
        raise TaskError(f"unknown dataset {dataset!r}; expected one of {list(METRIC_SETS)}")
    return {
        name: get_task(name, dataset, class_weights=class_weights, miou_over=miou_over)
        if name == "segment_semantic"
        else get_task(name, dataset)
        for name in METRIC_SETS[dataset]
    }
