"""Per-task losses, streaming metric accumulators and metric directions.

    from adapmtl.tasks import dataset_tasks
    tasks = dataset_tasks("nyuv2")           # {"segment_semantic": ..., "normal": ..., "depth_zbuffer": ...}
    loss = tasks["normal"].loss(pred, target)
    acc = tasks["normal"].accumulator()      # update(pred, target) per batch, compute() at the end
"""
from adapmtl.tasks.base import MetricAccumulator, Task, TaskError
from adapmtl.tasks.catalog import METRIC_SETS, SEGMENTATION_CLASSES, TASK_NAMES, dataset_tasks, get_task
from adapmtl.tasks.dense import EdgesTask, KeypointsTask
from adapmtl.tasks.depth import DepthTask
from adapmtl.tasks.normal import NormalTask
from adapmtl.tasks.segmentation import IGNORE_INDEX, SegmentationTask, miou

__all__ = [
    "IGNORE_INDEX",
    "METRIC_SETS",
    "SEGMENTATION_CLASSES",
    "TASK_NAMES",
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
]
