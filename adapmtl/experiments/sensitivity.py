"""How much each task suffers when one component alone is pruned further (the paper's Figure 5).

The sweep starts from the run's finalized model. For each fraction f, the f·n smallest-magnitude
non-zero weights of the component (n of them; one ranking over all its prunable layers; ties by
position) are set to zero, nothing is retrained, and the model is evaluated. The x axis is f, the
share of the component's remaining weights removed; its total sparsity is then s0 + (1 − s0)·f,
with s0 its sparsity in the run (for a dense run, f is the sparsity itself). Point f = 0 is the
unpruned model, so it reproduces the run's own metrics exactly.

The result, its file and its figure are `adapmtl.report.sensitivity`'s: the report reads them.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from adapmtl.engine.run_eval import run_evaluator
from adapmtl.engine.rundir import RunDir
from adapmtl.metrics import HIGHER_IS_BETTER
from adapmtl.report.runs import ReportError
from adapmtl.report.sensitivity import SensitivityResult

DEFAULT_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def _ratio(value: float, base: float, higher_is_better: bool) -> float:
    numerator, denominator = (value, base) if higher_is_better else (base, value)
    return numerator / denominator if denominator else math.nan


def sensitivity_sweep(run_dir: str | Path, component: str, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                      split: str = "val") -> SensitivityResult:
    """Prune `component` of a finished run's finalized model at each fraction (see the module doc),
    evaluate on `split` ("val" or "test") as `adapmtl eval` does, and return every point.

    Raises ReportError if the fractions are not distinct, increasing and in [0, 1), if `split` is
    neither "val" nor "test", or if the model has no component `component`; RunDirError if
    `run_dir` is not a finished run or its model file is damaged.
    """
    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0.0 <= f < 1.0 for f in fractions) or fractions != sorted(set(fractions)):
        raise ReportError(f"fractions must be distinct, increasing and in [0, 1); got {fractions}")
    if split not in ("val", "test"):
        raise ReportError(f"split must be 'val' or 'test', got {split!r}")
    run_dir = Path(run_dir)
    model, spec = RunDir(run_dir).load_model()
    owner = spec.scope.component_of(model)  # the weights and components the run pruned
    if component not in set(owner.values()):
        raise ReportError(f"{run_dir}: no component {component!r}; its components are {sorted(set(owner.values()))}")
    tensors = spec.scope.weights(model)
    weights = [getattr(*tensors[name]) for name, c in owner.items() if c == component]
    original = [w.detach().clone() for w in weights]
    flat = torch.cat([w.reshape(-1) for w in original])
    nonzero = flat.nonzero().squeeze(1)
    ranking = nonzero[flat[nonzero].abs().argsort(stable=True)]  # indices of the non-zeros, smallest first
    base_sparsity = 1.0 - nonzero.numel() / flat.numel()

    _, _, run_on_split = run_evaluator(run_dir, split)
    points, sparsities = [], []
    for fraction in fractions:
        keep = torch.ones_like(flat, dtype=torch.bool)
        keep[ranking[: round(fraction * ranking.numel())]] = False
        with torch.no_grad():
            start = 0
            for weight, value in zip(weights, original):
                weight.copy_(value * keep[start:start + value.numel()].view_as(value))
                start += value.numel()
        metrics, _ = run_on_split(model)
        points.append(metrics)
        sparsities.append(1.0 - int(keep[nonzero].sum()) / flat.numel())
    primary = {task: next(iter(values)) for task, values in points[0].items()}
    normalised = {task: [_ratio(p[task][m], points[0][task][m], HIGHER_IS_BETTER.get(m, True)) for p in points]
                  for task, m in primary.items()}
    return SensitivityResult(str(run_dir), component, split, base_sparsity, fractions, sparsities, points, primary,
                             normalised)
