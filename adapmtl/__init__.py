"""adapmtl: adaptive soft-threshold pruning of multitask networks (AdapMTL, ACM MM 2024).

The public API, re-exported; see README.md.
"""
from adapmtl import data, errors, metrics, models, tasks
from adapmtl.sparsity import (
    FinalizeReport,
    SparsityController,
    SparsityReport,
    finalize,
    sparsify,
    sparsity_report,
    threshold_parameters,
)

__version__ = "0.1.0"

__all__ = [
    "data",
    "errors",
    "metrics",
    "models",
    "tasks",
    "FinalizeReport",
    "SparsityController",
    "SparsityReport",
    "finalize",
    "sparsify",
    "sparsity_report",
    "threshold_parameters",
    "__version__",
]
