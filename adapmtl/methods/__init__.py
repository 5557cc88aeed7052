"""Pruning methods behind one interface (`Method`), picked by name with `create_method`.

Importing this package registers the built-in methods (each file registers its own
classes with `@register_method`). This package never imports the engine: the engine
imports it.
"""
from __future__ import annotations

from adapmtl.methods.base import Method, MethodContext, MethodError, MethodOptions
from adapmtl.methods.registry import (METHODS, create_method, method_class, method_options, option_keys,
                                      register_method)
from adapmtl.methods.adapmtl import AdapMTL, AdapMTLEqualWeights, AdapMTLGlobal, AdapMTLLayer
from adapmtl.methods.dense import Dense
from adapmtl.methods.disparse import DiSparseDynamic, DiSparsePretrained, DiSparseStatic
from adapmtl.methods.gmp import GMP
from adapmtl.methods.imp import IMP
from adapmtl.methods.lth import LTH
from adapmtl.methods.masks import MaskedMethod, MaskSet
from adapmtl.methods.random import Random
from adapmtl.methods.snip import SNIP

__all__ = ["METHODS", "Method", "MethodContext", "MethodError", "MethodOptions", "MaskSet", "MaskedMethod",
           "create_method", "method_class", "method_options", "option_keys", "register_method",
           "AdapMTL", "AdapMTLEqualWeights", "AdapMTLGlobal", "AdapMTLLayer", "Dense", "DiSparseDynamic",
           "DiSparsePretrained", "DiSparseStatic", "GMP", "IMP", "LTH", "Random", "SNIP"]
