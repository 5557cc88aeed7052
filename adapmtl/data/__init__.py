"""Datasets in their published formats, joint transforms, and synthetic scenes that stand in for them.

Every dataset yields sample dicts of tensors (see :mod:`adapmtl.data.base`) and exposes
``num_classes`` and ``task_channels`` so that a model can be built from it.
"""
from adapmtl.data.base import IGNORE_INDEX, NORMALIZATIONS, TASKS, DatasetError, MultitaskDataset
from adapmtl.data.check import CheckReport, check_dataset
from adapmtl.data.nyuv2 import NYUv2
from adapmtl.data.preview import save_preview
from adapmtl.data.synthetic import SCENE_CLASSES, SyntheticScenes, render_scene
from adapmtl.data.taskonomy import Taskonomy
from adapmtl.data.transforms import EvalTransform, TrainTransform
from adapmtl.data.write import write_synthetic

__all__ = [
    "IGNORE_INDEX",
    "NORMALIZATIONS",
    "TASKS",
    "SCENE_CLASSES",
    "CheckReport",
    "DatasetError",
    "EvalTransform",
    "MultitaskDataset",
    "NYUv2",
    "SyntheticScenes",
    "Taskonomy",
    "TrainTransform",
    "check_dataset",
    "render_scene",
    "save_preview",
    "write_synthetic",
]
