"""`Registry`: named entries of one kind (methods, weightings, models, datasets), filled where each is defined.

    METHODS = Registry("method", MethodError)
    METHODS.add("snip", SNIP)       # what @register_method does at SNIP's definition
    METHODS.get_entry("snip")       # or a MethodError listing the known names
"""
from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """A dict from name to entry that refuses a second, different entry under a taken name and
    names the known entries when asked for an unknown one. Raises `error` in both cases."""

    def __init__(self, kind: str, error: type[Exception]) -> None:
        super().__init__()
        self.kind = kind
        self.error = error

    def add(self, name: str, entry: T) -> T:
        """Register `entry` as `name` and return it. Raises `error` if `name` holds another entry
        (registering the same entry again is allowed: a module imported twice)."""
        if name in self and self[name] is not entry:
            raise self.error(f"a {self.kind} named {name!r} is already registered "
                             f"({getattr(self[name], '__qualname__', self[name])!s})")
        self[name] = entry
        return entry

    def get_entry(self, name: str) -> T:
        """The entry registered as `name`. Raises `error` listing the known names if there is none."""
        if name not in self:
            raise self.error(f"unknown {self.kind} {name!r}; expected one of {', '.join(self.names())}")
        return self[name]

    def copy(self) -> "Registry[T]":
        """A registry of the same kind with the same entries (tests register into a copy)."""
        duplicate: Registry[T] = Registry(self.kind, self.error)
        duplicate.update(self)
        return duplicate

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self)
