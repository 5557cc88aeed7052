"""Methods by name: `@register_method` at each method's definition, `create_method` to build one.

A new method is one file: a `Method` subclass with a `name`, its `options_type` (a
`MethodOptions` subclass declaring its options), decorated with `@register_method`, and
imported by `adapmtl/methods/__init__.py`.
"""
from __future__ import annotations

from typing import Any, Mapping, TypeVar

from adapmtl.methods.base import Method, MethodError, MethodOptions

METHODS: dict[str, type[Method]] = {}
"""Every registered method class by its name, in registration order."""

M = TypeVar("M", bound=type[Method])


def register_method(cls: M) -> M:
    """Class decorator: make `cls` available by `cls.name` (config `method.name`, bench lists).

    Raises MethodError if the name is taken by another class.
    """
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise MethodError(f"a method named {cls.name!r} is already registered ({METHODS[cls.name].__qualname__})")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    """The registered method `name`. Raises MethodError listing the known names if there is none."""
    if name not in METHODS:
        raise MethodError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]


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


def create_method(options: Mapping[str, Any] | MethodOptions, steps: int) -> Method:
    """The method named by `options["name"]`, with its validated options, for a run of `steps` steps.

    Raises MethodError (unknown name, a section that is not a mapping) or pydantic's
    ValidationError (bad options).
    """
    validated = method_options(options)
    return METHODS[validated.name](validated, steps)


__all__ = ["METHODS", "create_method", "method_class", "method_options", "register_method"]
