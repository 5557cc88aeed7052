"""Per-task losses, streaming metric accumulators and metric directions; the one home of task facts
(canonical names, head channels, ignore label, each dataset's tasks, classes and metrics).

    from adapmtl.tasks import dataset_tasks
    tasks = dataset_tasks("nyuv2")           # {"segment_semantic": ..., "normal": ..., "depth_zbuffer": ...}
    loss = tasks["normal"].loss(pred, target)
    acc = tasks["normal"].accumulator()      # update(pred, target) per batch, compute() at the end

Every task takes `convention="corrected"` (default) or `"paper"` (the original code's computation);
`CONVENTIONS` says what each changes.
"""
from adapmtl.tasks.base import CONVENTIONS, DEFAULT_CONVENTION, Convention, MetricAccumulator, Task, TaskError
from adapmtl.tasks.catalog import (
    DATASET_TASKS,
    FILL_VALUES,
    METRIC_SETS,
    NYUV2_MTAN_CLASSES,
    SEGMENTATION_CLASSES,
    TASK_CLASSES,
    TASK_NAMES,
    dataset_tasks,
    get_task,
    task_channels,
)
from adapmtl.tasks.dense import EdgesTask, KeypointsTask
from adapmtl.tasks.depth import DepthTask
from adapmtl.tasks.normal import PAPER_NORMAL_VECTORS, NormalTask
from adapmtl.tasks.segmentation import DEFAULT_MIOU_OVER, IGNORE_INDEX, SegmentationTask, miou

__all__ = [
    "CONVENTIONS",
    "DATASET_TASKS",
    "DEFAULT_CONVENTION",
    "DEFAULT_MIOU_OVER",
    "FILL_VALUES",
    "IGNORE_INDEX",
    "METRIC_SETS",
    "NYUV2_MTAN_CLASSES",
    "PAPER_NORMAL_VECTORS",
    "SEGMENTATION_CLASSES",
    "TASK_CLASSES",
    "TASK_NAMES",
    "Convention",
    "DepthTask",
    "EdgesTask",
    "KeypointsTask",
    "MetricAccumulator",
    "NormalTask",
    "SegmentationTask",
    "Task",
    "TaskError",
    "dataset_tasks",
    "get_task",
    "miou",
    "task_channels",
]
