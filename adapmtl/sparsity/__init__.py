"""Soft-threshold sparsity: sparsify → train (with the controller) → finalize."""
from adapmtl.sparsity.components import (
    ATTENTION_TENSORS, PRUNABLE_TYPES, assign_components, infer_components, prunable_layers, prunable_weights,
)
from adapmtl.sparsity.controller import SparsityController
from adapmtl.sparsity.finalize import FinalizeReport, finalize
from adapmtl.sparsity.scope import PruneScope
from adapmtl.sparsity.report import ComponentSparsity, LayerSparsity, SparsityReport, sparsity_report
from adapmtl.sparsity.soft_threshold import SoftThreshold, soft_threshold
from adapmtl.sparsity.sparsify import sparse_layers, sparsify, threshold_parameters

__all__ = [
    "ATTENTION_TENSORS", "PRUNABLE_TYPES", "assign_components", "infer_components", "prunable_layers",
    "prunable_weights", "PruneScope",
    "SparsityController", "FinalizeReport", "finalize",
    "ComponentSparsity", "LayerSparsity", "SparsityReport", "sparsity_report",
    "SoftThreshold", "soft_threshold", "sparse_layers", "sparsify", "threshold_parameters",
]
