"""Datasets in their published formats, joint transforms, and synthetic scenes that stand in for them.

Every dataset yields sample dicts of tensors (see :mod:`adapmtl.data.base`) and exposes
``num_classes`` and ``task_channels`` so that a model can be built from it. Datasets are
registered by name where they are defined (:mod:`adapmtl.data.registry`); importing this
package registers the built-in ones. Task facts (names, channels, ignore label) come from
:mod:`adapmtl.tasks`.
"""
from adapmtl.data.base import NORMALIZATIONS, DatasetError, MultitaskDataset
from adapmtl.data.registry import DATASETS, available_datasets, create_dataset, dataset_class, register_dataset
from adapmtl.data.nyuv2 import NYUv2
from adapmtl.data.synthetic import SCENE_CLASSES, SyntheticScenes, render_scene
from adapmtl.data.taskonomy import Taskonomy
from adapmtl.data.check import CheckReport, check_dataset
from adapmtl.data.preview import save_preview
from adapmtl.data.transforms import EvalTransform, TrainTransform
from adapmtl.data.write import write_synthetic

__all__ = [
    "DATASETS",
    "NORMALIZATIONS",
    "SCENE_CLASSES",
    "CheckReport",
    "DatasetError",
    "EvalTransform",
    "MultitaskDataset",
    "NYUv2",
    "SyntheticScenes",
    "Taskonomy",
    "TrainTransform",
    "available_datasets",
    "check_dataset",
    "create_dataset",
    "dataset_class",
    "register_dataset",
    "render_scene",
    "save_preview",
    "write_synthetic",
]
