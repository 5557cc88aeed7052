"""Experiments that train or evaluate models: the bench (methods × target sparsities × seeds) and
the per-component sensitivity sweep. What they produce, `adapmtl.report` reads and renders.

    result = sensitivity_sweep("runs/quickstart/adapmtl", "backbone")
    adapmtl.report.write_sensitivity(result, "runs/quickstart/adapmtl/sensitivity")
"""
from adapmtl.experiments.sensitivity import DEFAULT_FRACTIONS, sensitivity_sweep

__all__ = ["DEFAULT_FRACTIONS", "sensitivity_sweep"]
