"""Datasets by name: `@register_dataset(name)` at each dataset's definition, `create_dataset` to build one.

    from adapmtl.data import available_datasets, create_dataset
    available_datasets()                                   # ["nyuv2", "synthetic", "taskonomy"]
    train = create_dataset("nyuv2", "data/nyuv2", "train")  # = NYUv2("data/nyuv2", "train")

A new dataset is one file: a `MultitaskDataset` subclass decorated with `@register_dataset`,
with `from_config` (how a run config's `data:` section builds it), imported by
`adapmtl/data/__init__.py`. The run config's `data.dataset` names one of `available_datasets()`.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from adapmtl.data.base import DatasetError, MultitaskDataset
from adapmtl.registry import Registry

DATASETS: Registry[type[MultitaskDataset]] = Registry("dataset", DatasetError)
"""Every registered dataset class by its name."""

D = TypeVar("D", bound=type[MultitaskDataset])


def register_dataset(name: str) -> Callable[[D], D]:
    """Class decorator: make the dataset class available as `name` (config `data.dataset`).

    Raises DatasetError if `name` is taken by another class.
    """

    return lambda cls: DATASETS.add(name, cls)


def available_datasets() -> list[str]:
    """The names `create_dataset` and a run config's `data.dataset` accept, sorted."""
    return DATASETS.names()


def dataset_class(name: str) -> type[MultitaskDataset]:
    """The dataset class registered as `name`. Raises DatasetError listing the known names if there is none."""
    return DATASETS.get_entry(name)


def create_dataset(name: str, *args: Any, **kwargs: Any) -> MultitaskDataset:
    """The dataset `name` built with its own class's arguments (see that class, e.g. `NYUv2`).

    Raises DatasetError for an unknown name, or what the class raises for bad arguments or files.
    """
    return dataset_class(name)(*args, **kwargs)
