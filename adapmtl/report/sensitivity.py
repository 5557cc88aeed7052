"""Saved sensitivity sweeps (the paper's Figure 5): the result, its JSON file and its figure.

`adapmtl.experiments.sensitivity_sweep` prunes and evaluates to make a `SensitivityResult`; this
module only writes, reads and draws it, so the report never runs a model.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from matplotlib.figure import Figure

from adapmtl.engine.rundir import RunDir
from adapmtl.files import write_atomic
from adapmtl.report.plots import color_map, save_figure
from adapmtl.report.runs import ReportError


@dataclass
class SensitivityResult:
    """One sweep of `component` of run folder `run` on `split`. Per point: `fractions` (share of the
    component's remaining weights removed, 0..1), `sparsity` (the component's total sparsity, 0..1)
    and `metrics` ({task: {metric: value}}). `primary[task]`: the task's first metric;
    `normalised[task]`: it relative to the first point (f = 0, the unpruned model), oriented so
    1 = unpruned and lower = worse (value / base for higher-is-better metrics, base / value otherwise)."""

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
        """The fields as a JSON-ready dict (what `from_dict` reads)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SensitivityResult":
        """The result `to_dict` wrote. Raises TypeError if a field is missing or unknown."""
        return cls(**data)


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
    """Write `<component>.json` and the figure (`<component>.png`, `.svg`) into `out_dir` (created
    if needed); returns the three paths. Raises OSError if `out_dir` cannot be written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result.component}.json"
    write_atomic(path, (json.dumps(result.to_dict(), indent=2) + "\n").encode())
    return [path, *save_figure(sensitivity_figure([result]), out_dir / result.component)]


def read_sensitivity(run_dir: str | Path) -> list[SensitivityResult]:
    """The sweeps saved under `run_dir`/sensitivity (by `adapmtl sensitivity`), in name order; none
    when the folder is missing. Raises ReportError naming the file if a sweep file is damaged."""
    results = []
    for path in sorted(RunDir(run_dir).sensitivity_dir.glob("*.json")):
        try:
            results.append(SensitivityResult.from_dict(json.loads(path.read_text())))
        except (ValueError, TypeError) as error:  # not JSON, or not a sweep's fields
            raise ReportError(f"{path} is not a saved sensitivity sweep ({error}); run `adapmtl sensitivity` "
                              "again to rewrite it") from None
    return results
