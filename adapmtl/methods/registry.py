"""Methods by name: `@register_method` at each method's definition, `create_method` to build one.

A new method is one file: a `Method` subclass with a `name`, its `options_type` (a
`MethodOptions` subclass declaring its options), decorated with `@register_method`, and
imported by `adapmtl/methods/__init__.py`.
"""
from __future__ import annotations

from typing import Any, Mapping, TypeVar

from adapmtl.methods.base import Method, MethodError, MethodOptions
from adapmtl.registry import Registry
from adapmtl.sparsity import PruneScope

METHODS: Registry[type[Method]] = Registry("method", MethodError)
"""Every registered method class by its name."""

M = TypeVar("M", bound=type[Method])


def register_method(cls: M) -> M:
    """Class decorator: make `cls` available by `cls.name` (config `method.name`, bench lists).

    Raises MethodError if the name is taken by another class.
    """
    return METHODS.add(cls.name, cls)


def method_class(name: str) -> type[Method]:
    """The registered method `name`. Raises MethodError listing the known names if there is none."""
    return METHODS.get_entry(name)


def option_keys(name: str | None = None) -> list[str]:
    """The option keys of method `name` (its `options_type`'s fields, in order), or, for None,
    those of every registered method. Raises MethodError for an unknown name."""
    if name is not None:
        return list(method_class(name).options_type.model_fields)
    return list(dict.fromkeys(key for cls in METHODS.values() for key in cls.options_type.model_fields))


def method_options(raw: Mapping[str, Any] | MethodOptions) -> MethodOptions:
    """Validate a `method:` config section against the options of the method it names.

    `raw["name"]` (default "adapmtl") picks the method; every other key must be one of
    that method's options. Raises MethodError for an unknown or non-string name or a section
    that is not a mapping, and pydantic's
    ValidationError (with locations relative to the section) for bad or foreign options.
    """
    if isinstance(raw, MethodOptions):
        raw = raw.model_dump()
    if not isinstance(raw, Mapping):
        raise MethodError(f"the method section must be a mapping of options, got {type(raw).__name__}")
    name = raw.get("name", MethodOptions.model_fields["name"].default)
    if not isinstance(name, str):
        raise MethodError(f"method name must be a string, got {name!r}")
    return method_class(name).options_type.model_validate({**raw, "name": name})


def create_method(options: Mapping[str, Any] | MethodOptions, steps: int, scope: PruneScope = PruneScope()) -> Method:
    """The method named by `options["name"]`, with its validated options, for a run of `steps` steps,
    pruning the weights `scope` names (default: every Conv/Linear/attention weight, inferred components).

    Raises MethodError (unknown name, a section that is not a mapping) or pydantic's
    ValidationError (bad options).
    """
    validated = method_options(options)
    return METHODS[validated.name](validated, steps, scope)


__all__ = ["METHODS", "create_method", "method_class", "method_options", "register_method"]
