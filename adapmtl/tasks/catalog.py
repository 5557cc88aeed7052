"""Tasks by name and dataset: the one home of the task facts the data, models and engine use.

    task = get_task("depth_zbuffer", metrics="nyuv2")      # or metrics=["abs_err", "rel_err"]
    loss = task.loss(pred, target)                          # scalar, differentiable
    acc = task.accumulator(); acc.update(pred, target); acc.compute()  # {metric: float}
    task.directions                                          # {metric: higher_is_better}
    task_channels(DATASET_TASKS["nyuv2"], SEGMENTATION_CLASSES["nyuv2"])  # a create_model task table
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

TASK_CLASSES: Mapping[str, type[Task]] = MappingProxyType(
    {cls.name: cls for cls in (SegmentationTask, NormalTask, DepthTask, KeypointsTask, EdgesTask)}
)
"""Every task class by its canonical name, in the canonical order."""

TASK_NAMES: tuple[str, ...] = tuple(TASK_CLASSES)
"""Canonical task names, in a fixed order."""

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

DATASET_TASKS: Mapping[str, tuple[str, ...]] = MappingProxyType({name: tuple(s) for name, s in METRIC_SETS.items()})
"""The tasks each dataset of the paper has, in order: NYU-v2 three, Taskonomy all five."""

SEGMENTATION_CLASSES: Mapping[str, int] = MappingProxyType({"nyuv2": 40, "taskonomy": 17})
"""Segmentation classes of each dataset's label set as the paper uses it."""

NYUV2_MTAN_CLASSES = 13
"""Segmentation classes of the 13-class NYU-v2 label set (the MTAN / LibMTL files hold it)."""

FILL_VALUES: Mapping[str, float] = MappingProxyType({name: cls.fill_value for name, cls in TASK_CLASSES.items()})
"""{task: what its target holds where it carries nothing}: the ignore label for segment_semantic,
the invalid encodings for normal and depth_zbuffer, 0 for keypoints2d and edge_texture."""


def task_channels(tasks: Sequence[str], num_classes: int) -> dict[str, int]:
    """{task: output channels its head needs}: `num_classes` for segment_semantic, 3 for normal,
    1 for the others; in the order of `tasks`. This is the task table `create_model` takes.

    Raises TaskError if a name is not in TASK_NAMES.
    """
    unknown = [t for t in tasks if t not in TASK_CLASSES]
    if unknown:
        raise TaskError(f"unknown task(s) {unknown}; expected names from {list(TASK_NAMES)}")
    return {t: num_classes if t == SegmentationTask.name else TASK_CLASSES[t].out_channels for t in tasks}


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
    Raises TaskError for an unknown task, dataset or metric, a dataset without this task,
    a list of metrics without num_classes for segment_semantic, or segmentation options
    given to another task.
    """
    if name not in TASK_CLASSES:
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
    if name == SegmentationTask.name:
        if num_classes is None:
            if dataset is None:
                raise TaskError("segment_semantic: num_classes is required when metrics is a list of names")
            num_classes = SEGMENTATION_CLASSES[dataset]
        return SegmentationTask(num_classes, metrics, class_weights=class_weights, miou_over=miou_over)
    if num_classes is not None or class_weights is not None or miou_over != "present":
        raise TaskError(f"{name}: num_classes, class_weights and miou_over apply to segment_semantic only")
    return TASK_CLASSES[name](metrics)


def dataset_tasks(
    dataset: str,
    *,
    class_weights: Tensor | Sequence[float] | None = None,
    miou_over: MiouOver = "present",
) -> dict[str, Task]:
    """{task name: Task} for every task of `dataset` ("nyuv2" or "taskonomy"), with its metrics.

    `{t: task.out_channels for t, task in dataset_tasks("nyuv2").items()}` is the task
    table `adapmtl.models.create_model` takes. Raises TaskError for another dataset name,
    or bad `class_weights` / `miou_over` (see `SegmentationTask`).
    """
    if dataset not in METRIC_SETS:
        raise TaskError(f"unknown dataset {dataset!r}; expected one of {list(METRIC_SETS)}")
    return {
        name: get_task(name, dataset, class_weights=class_weights, miou_over=miou_over)
        if name == SegmentationTask.name
        else get_task(name, dataset)
        for name in DATASET_TASKS[dataset]
    }
