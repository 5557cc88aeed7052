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

DATASETS: dict[str, type[MultitaskDataset]] = {}
"""Every registered dataset class by its name, in registration order."""

D = TypeVar("D", bound=type[MultitaskDataset])


def register_dataset(name: str) -> Callable[[D], D]:
    """Class decorator: make the dataset class available as `name` (config `data.dataset`).

    Raises DatasetError if `name` is taken by another class.
    """

    def register(cls: D) -> D:
        if name in DATASETS and DATASETS[name] is not cls:
            raise DatasetError(f"a dataset named {name!r} is already registered ({DATASETS[name].__qualname__})")
        DATASETS[name] = cls
        return cls

    return register


def available_datasets() -> list[str]:
    """The names `create_dataset` and a run config's `data.dataset` accept, sorted."""
    return sorted(DATASETS)


def dataset_class(name: str) -> type[MultitaskDataset]:
    """The dataset class registered as `name`. Raises DatasetError listing the known names if there is none."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {available_datasets()}")
    return DATASETS[name]


def create_dataset(name: str, *args: Any, **kwargs: Any) -> MultitaskDataset:
    """The dataset `name` built with its own class's arguments (see that class, e.g. `NYUv2`).

    Raises DatasetError for an unknown name, or what the class raises for bad arguments or files.
    """
    return dataset_class(name)(*args, **kwargs)
