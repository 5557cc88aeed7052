"""Tasks by name and dataset: the one home of the task facts the data, models and engine use.

    task = get_task("depth_zbuffer", metrics="nyuv2")      # or metrics=["abs_err", "rel_err"]
    paper = get_task("normal", "nyuv2", convention="paper") # computed as the original code does
    loss = task.loss(pred, target)                          # scalar, differentiable
    acc = task.accumulator(); acc.update(pred, target); acc.compute()  # {metric: float}
    task.directions                                          # {metric: higher_is_better}
    task_channels(DATASET_TASKS["nyuv2"], SEGMENTATION_CLASSES["nyuv2"])  # a create_model task table
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Sequence

from torch import Tensor

from adapmtl.tasks.base import DEFAULT_CONVENTION, Convention, Task, TaskError, check_convention
from adapmtl.tasks.dense import EdgesTask, KeypointsTask
from adapmtl.tasks.depth import DepthTask
from adapmtl.tasks.normal import PAPER_NORMAL_VECTORS, NormalTask
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
    convention: Convention = DEFAULT_CONVENTION,
    miou_over: MiouOver | None = None,
    dataset: str | None = None,
) -> Task:
    """The task `name` (one of TASK_NAMES) with the metric set `metrics`, computed under `convention`.

    metrics: a dataset name ("nyuv2", "taskonomy": its metrics for this task, see
        METRIC_SETS) or a list of metric names the task supports.
    num_classes: segmentation classes; defaults to the dataset's (40 NYU-v2, 17 Taskonomy),
        required when `metrics` is a list.
    convention: "corrected" (default) or "paper", the original code's computation (see
        CONVENTIONS): normals on raw colour vectors, loss at the prediction's resolution
        against the nearest-resized target, metrics on the nearest-upsampled prediction,
        mIoU over classes with a true positive.
    miou_over: segmentation only; None (default) takes the convention's ("with_tp" under
        "paper", "present" under "corrected"; see `SegmentationTask`).
    class_weights: segmentation only (see `SegmentationTask`).
    dataset: the dataset whose original pipeline "paper" follows, a key of
        PAPER_NORMAL_VECTORS ("nyuv2": normals compared as 8-bit colour vectors;
        "taskonomy": as decoded unit vectors); defaults to `metrics` when that is a dataset
        name, else "nyuv2". It changes only the normal task under "paper".
    Raises TaskError for an unknown task, dataset, metric or convention, a dataset without
    this task, a list of metrics without num_classes for segment_semantic, or segmentation
    options given to another task.
    """
    if name not in TASK_CLASSES:
        raise TaskError(f"unknown task {name!r}; expected one of {list(TASK_NAMES)}")
    convention = check_convention(name, convention)
    if not isinstance(metrics, str) and not (
        isinstance(metrics, Sequence) and all(isinstance(m, str) for m in metrics)
    ):
        raise TaskError(f"{name}: metrics must be a dataset name or a list of metric names, got {metrics!r}")
    metric_set = metrics if isinstance(metrics, str) else None
    if metric_set is not None:
        if metric_set not in METRIC_SETS:
            raise TaskError(f"unknown dataset {metric_set!r} for metrics; expected one of {list(METRIC_SETS)} or a list of metric names")
        if name not in METRIC_SETS[metric_set]:
            raise TaskError(f"{metric_set} has no {name} task (it has {list(METRIC_SETS[metric_set])}); pass a list of metric names")
        metrics = METRIC_SETS[metric_set][name]
    if dataset is None:
        dataset = metric_set or "nyuv2"
    elif dataset not in PAPER_NORMAL_VECTORS:
        raise TaskError(f"unknown dataset {dataset!r}; expected one of {list(PAPER_NORMAL_VECTORS)}")
    if name == SegmentationTask.name:
        if num_classes is None:
            if metric_set is None:
                raise TaskError("segment_semantic: num_classes is required when metrics is a list of names")
            num_classes = SEGMENTATION_CLASSES[metric_set]
        return SegmentationTask(
            num_classes, metrics, class_weights=class_weights, miou_over=miou_over, convention=convention
        )
    if num_classes is not None or class_weights is not None or miou_over is not None:
        raise TaskError(f"{name}: num_classes, class_weights and miou_over apply to segment_semantic only")
    if name == NormalTask.name:
        return NormalTask(metrics, convention=convention, paper_vectors=PAPER_NORMAL_VECTORS[dataset])
    return TASK_CLASSES[name](metrics, convention=convention)


def dataset_tasks(
    dataset: str,
    *,
    class_weights: Tensor | Sequence[float] | None = None,
    miou_over: MiouOver | None = None,
    convention: Convention = DEFAULT_CONVENTION,
) -> dict[str, Task]:
    """{task name: Task} for every task of `dataset` ("nyuv2" or "taskonomy"), with its metrics,
    computed under `convention` (see `get_task`).

    `{t: task.out_channels for t, task in dataset_tasks("nyuv2").items()}` is the task
    table `adapmtl.models.create_model` takes. Raises TaskError for another dataset name, an
    unknown convention, or bad `class_weights` / `miou_over` (see `SegmentationTask`).
    """
    if dataset not in METRIC_SETS:
        raise TaskError(f"unknown dataset {dataset!r}; expected one of {list(METRIC_SETS)}")
    return {
        name: get_task(name, dataset, class_weights=class_weights, miou_over=miou_over, convention=convention)
        if name == SegmentationTask.name
        else get_task(name, dataset, convention=convention)
        for name in DATASET_TASKS[dataset]
    }
