"""How much each task suffers when one component alone is pruned further (the paper's Figure 5).

The sweep starts from the run's finalized model. For each fraction f, the f·n smallest-magnitude
non-zero weights of the component (n of them; one ranking over all its prunable layers; ties by
position) are set to zero, nothing is retrained, and the model is evaluated. The x axis is f, the
share of the component's remaining weights removed; its total sparsity is then s0 + (1 − s0)·f,
with s0 its sparsity in the run (for a dense run, f is the sparsity itself). Point f = 0 is the
unpruned model, so it reproduces the run's own metrics exactly.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from matplotlib.figure import Figure

from adapmtl.metrics import HIGHER_IS_BETTER
from adapmtl.report.plots import color_map, save_figure
from adapmtl.report.runs import ReportError

DEFAULT_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass
class SensitivityResult:
    """One sweep: per point the fraction removed, the component's sparsity and every metric;
    `normalised[task]`: the task's first metric relative to f = 0, oriented so 1 = unpruned and
    lower = worse (value / base for higher-is-better metrics, base / value otherwise)."""

    run: str
    component: str
    split: str
    base_sparsity: float
    fractions: list[float]
    sparsity: list[float]
    metrics: list[dict[str, dict[str, float]]]
    primary: dict[str, str]
    normalised: dict[str, list[float]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SensitivityResult":
        return cls(**data)


def _ratio(value: float, base: float, higher_is_better: bool) -> float:
    numerator, denominator = (value, base) if higher_is_better else (base, value)
    return numerator / denominator if denominator else math.nan


def sensitivity_sweep(run_dir: str | Path, component: str, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                      split: str = "val") -> SensitivityResult:
    """Prune `component` of a finished run's finalized model at each fraction (see the module doc),
    evaluate on `split` ("val" or "test"), and return every point. Fractions must be increasing in [0, 1)."""
    from adapmtl.engine.run_eval import run_evaluator  # evaluates as `adapmtl eval` does
    from adapmtl.export import load_run_model
    from adapmtl.sparsity import assign_components, prunable_layers

    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0.0 <= f < 1.0 for f in fractions) or fractions != sorted(set(fractions)):
        raise ReportError(f"fractions must be distinct, increasing and in [0, 1); got {fractions}")
    if split not in ("val", "test"):
        raise ReportError(f"split must be 'val' or 'test', got {split!r}")
    run_dir = Path(run_dir)
    model, _ = load_run_model(run_dir)
    owner = assign_components(model, None)
    if component not in set(owner.values()):
        raise ReportError(f"{run_dir}: no component {component!r}; its components are {sorted(set(owner.values()))}")
    layers = prunable_layers(model)
    weights = [layers[name].weight for name, c in owner.items() if c == component]
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


def sensitivity_figure(results: Sequence[SensitivityResult]) -> Figure:
    """One panel per swept component: each task's normalised metric against the share of the
    component's remaining weights removed (bottom axis) and its total sparsity (top axis)."""
    fig = Figure(figsize=(6.0 * len(results), 4.4), layout="constrained")
    for i, result in enumerate(results):
        ax = fig.add_subplot(1, len(results), i + 1)
        colors = color_map(list(result.primary))
        for task, values in result.normalised.items():
            ax.plot([100 * f for f in result.fractions], values, marker="o", markersize=4, linewidth=1.6,
                    color=colors[task], label=f"{task} ({result.primary[task]})")
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1.0)
        s0 = result.base_sparsity
        top = ax.secondary_xaxis("top", functions=(lambda f, s0=s0: 100 * s0 + (1 - s0) * f,
                                                   lambda s, s0=s0: (s - 100 * s0) / (1 - s0)))
        top.set_xlabel(f"total sparsity of {result.component} (%)")
        ax.set_xlabel(f"share of {result.component}'s remaining weights pruned (%)")
        ax.set_ylabel(f"{result.split} metric ÷ unpruned (1 = unpruned)")
        ax.set_title(f"Pruning only {result.component} (starts at {100 * s0:.1f} % sparse)", fontsize=11)
        values = [v for vs in result.normalised.values() for v in vs if math.isfinite(v)]
        ax.set_ylim(min(0.9, min(values, default=1.0) - 0.02), max(1.05, max(values, default=1.0) + 0.02))
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_xlim(0, 100)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=9, loc="lower left", title="task (metric; lower = worse)", title_fontsize=9)
    return fig


def write_sensitivity(result: SensitivityResult, out_dir: str | Path) -> list[Path]:
    """Write `<component>.json` and the figure (`<component>.png`, `.svg`) into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result.component}.json"
    path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return [path, *save_figure(sensitivity_figure([result]), out_dir / result.component)]


def read_sensitivity(run_dir: str | Path) -> list[SensitivityResult]:
    """The sweeps saved under `run_dir`/sensitivity (by `adapmtl sensitivity`), in name order."""
    folder = Path(run_dir) / "sensitivity"
    return [SensitivityResult.from_dict(json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]
