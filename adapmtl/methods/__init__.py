"""Pruning methods behind one interface (`Method`), picked by name with `create_method`."""
from __future__ import annotations

from adapmtl.engine.config import MethodConfig, TrainConfig
from adapmtl.methods.adapmtl import AdapMTL, AdapMTLEqualWeights, AdapMTLGlobal, AdapMTLLayer
from adapmtl.methods.base import Method, MethodContext, MethodError
from adapmtl.methods.dense import Dense
from adapmtl.methods.disparse import DiSparseDynamic, DiSparseStatic
from adapmtl.methods.gmp import GMP
from adapmtl.methods.imp import IMP
from adapmtl.methods.lth import LTH
from adapmtl.methods.masks import MaskedMethod, MaskSet
from adapmtl.methods.random import Random
from adapmtl.methods.snip import SNIP

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (
    Dense, AdapMTL, AdapMTLGlobal, AdapMTLLayer, AdapMTLEqualWeights,
    IMP, LTH, SNIP, GMP, DiSparseStatic, DiSparseDynamic, Random,
)}


def create_method(config: MethodConfig, train: TrainConfig) -> Method:
    """The method `config.name` (see METHODS)."""
    if config.name not in METHODS:
        raise MethodError(f"unknown method {config.name!r}; expected one of {sorted(METHODS)}")
    return METHODS[config.name](config, train)


__all__ = ["METHODS", "Method", "MethodContext", "MethodError", "MaskSet", "MaskedMethod", "create_method",
           "AdapMTL", "AdapMTLEqualWeights", "AdapMTLGlobal", "AdapMTLLayer", "Dense", "DiSparseDynamic",
           "DiSparseStatic", "GMP", "IMP", "LTH", "Random", "SNIP"]
