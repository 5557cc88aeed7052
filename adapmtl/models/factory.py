"""The user's own models: `model.name: "package.module:function"` names an importable factory.

The contract (README, "Your own model in the engine"):

    def build(tasks: dict[str, int], **options) -> nn.Module

`tasks` is {task: output channels} in the dataset's task order; `options` are the run config's
`model.options` (JSON values). The module's `forward(image [B, 3, H, W])` returns a dict
{task: [B, C, H, W]} (a tuple or list in task order, or one tensor for one task, also works;
see `adapmtl.models.outputs`), at the input's resolution.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable, Mapping

from torch import nn

from adapmtl.models.errors import ModelError

SEPARATOR = ":"


def is_factory(name: str) -> bool:
    """True when `name` names an importable factory ("package.module:function"), not a registered model."""
    return SEPARATOR in name


def load_factory(name: str) -> Callable[..., nn.Module]:
    """The callable `name` ("package.module:attribute[.attribute]") points to.

    The current folder is searched too (as `python -m` does), so a project's own package imports
    without installing it. Raises ModelError when the name is malformed, the module cannot be
    imported (with the import error), the attribute is missing, or it is not callable."""
    module_name, _, attribute = name.partition(SEPARATOR)
    if not module_name or not attribute or SEPARATOR in attribute:
        raise ModelError(f"model factory {name!r}: expected 'package.module:function'")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelError(f"model factory {name!r}: cannot import {module_name!r} ({error}); is its package "
                         "installed, or its folder on PYTHONPATH?") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ModelError(f"model factory {name!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ModelError(f"model factory {name!r} is a {type(target).__name__}, not a callable")
    return target


def build_from_factory(name: str, tasks: Mapping[str, int], options: Mapping[str, Any]) -> nn.Module:
    """`factory(tasks=dict(tasks), **options)` for the factory `name`.

    Raises ModelError (see `load_factory`) when it cannot be found, when the call raises (naming
    the factory, its options and the error) or when it returns something other than an nn.Module."""
    factory = load_factory(name)
    try:
        model = factory(tasks=dict(tasks), **dict(options))
    except Exception as error:  # the user's code: say which call failed and how, in one line
        raise ModelError(f"model factory {name}(tasks={dict(tasks)}, **{dict(options)}) raised "
                         f"{type(error).__name__}: {error}") from error
    if not isinstance(model, nn.Module):
        raise ModelError(f"model factory {name!r} returned a {type(model).__name__}, expected an nn.Module")
    return model
