"""Pruning methods behind one interface (`Method`), picked by name with `create_method`."""
from __future__ import annotations

from adapmtl.engine.config import MethodConfig, TrainConfig
from adapmtl.methods.adapmtl import AdapMTL
from adapmtl.methods.base import Method, MethodError
from adapmtl.methods.dense import Dense

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (Dense, AdapMTL)}


def create_method(config: MethodConfig, train: TrainConfig) -> Method:
    """The method `config.name` (see METHODS)."""
    if config.name not in METHODS:
        raise MethodError(f"unknown method {config.name!r}; expected one of {sorted(METHODS)}")
    return METHODS[config.name](config, train)


__all__ = ["METHODS", "Method", "MethodError", "create_method", "AdapMTL", "Dense"]
