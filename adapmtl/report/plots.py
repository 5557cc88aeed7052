"""Pictures of runs (matplotlib, no pyplot state): each function returns a Figure, or None when
the run holds nothing to draw (a dense run has no thresholds; an unfinished one no final model).

    fig = sparsity_figure(load_run("runs/quickstart/adapmtl"))
    save_figure(fig, "out/sparsity")      # out/sparsity.png and out/sparsity.svg
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev
from typing import Any, Sequence

from matplotlib.figure import Figure  # Figure objects, no pyplot: no global state, no window, any backend
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from adapmtl.engine.rundir import RunDir
from adapmtl.metrics import MetricError, run_delta_t
from adapmtl.report.runs import RunRecord

OVERALL = "overall"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def color_map(names: Sequence[str]) -> dict[str, str]:
    """One stable colour per name (components, tasks, methods), in the order given; "overall" is black."""
    return {name: "black" if name == OVERALL else PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _figure(title: str, xlabel: str, ylabel: str, size: tuple[float, float] = (7.0, 4.2)) -> tuple[Figure, Any]:
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def save_figure(fig: Figure, stem: str | Path, dpi: int = 110) -> list[Path]:
    """Write `stem`.png and `stem`.svg (dots in the stem kept: "run_t0.9" gives "run_t0.9.png"); returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.svg"]
    fig.savefig(paths[0], dpi=dpi)
    fig.savefig(paths[1])
    return paths


def _log_y(ax: Any) -> None:
    """Log y axis with plain tick labels at 1, 2, 5 × 10^k (not 2×10^0)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], dict[str, list[float]]]:
    """Steps and {name: values} of the dict `key` of each record (names in first-seen order)."""
    steps = [r["step"] for r in records if r.get(key)]
    names = list(dict.fromkeys(n for r in records if r.get(key) for n in r[key]))
    values = {n: [r[key].get(n, math.nan) for r in records if r.get(key)] for n in names}
    return steps, values


def interventions(records: list[dict[str, Any]]) -> list[int]:
    """The logged steps by which the controller had stepped in once more (its shift moved every
    threshold score; its count rose since the previous record)."""
    steps, seen = [], 0
    for record in records:
        count = record.get("controller", {}).get("interventions")
        if count is not None and count > seen:
            steps.append(record["step"])
            seen = count
    return steps


def sparsity_figure(run: RunRecord) -> Figure | None:
    """Sparsity (%) of each component and overall over training, with the target (the paper's Figure 3);
    grey ticks on the top edge mark the records by which the controller had stepped in."""
    steps, series = _series(run.train_records, "sparsity")
    if not steps or all(v == 0 for values in series.values() for v in values):
        return None
    fig, ax = _figure(f"Sparsity of each component during training — {run.label}", "training step",
                      "sparsity (% of prunable weights that are zero)")
    colors = color_map([n for n in series if n != OVERALL])
    for name, values in series.items():
        overall = name == OVERALL
        ax.plot(steps, [100 * v for v in values], color="black" if overall else colors[name],
                linewidth=2.4 if overall else 1.6, linestyle="--" if overall else "-", label=name, zorder=3 if overall else 2)
    if run.target:
        ax.axhline(100 * run.target, color="grey", linestyle=":", linewidth=1.2, label=f"target {100 * run.target:g} %")
    stepped = interventions(run.train_records)
    if stepped:
        total = run.train_records[-1]["controller"]["interventions"]
        ax.plot(stepped, [99] * len(stepped), linestyle="none", marker="v", color="grey", markersize=5,
                label=f"controller stepped in ({total}×)")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right", fontsize=9)
    return fig


def _lines_figure(run: RunRecord, key: str, title: str, ylabel: str) -> tuple[Figure, Any, dict[str, list[float]]] | None:
    """(figure, axes, series): one line per entry of the training records' dict `key` over steps."""
    steps, series = _series(run.train_records, key)
    if not steps:
        return None
    fig, ax = _figure(f"{title} — {run.label}", "training step", ylabel)
    colors = color_map(list(series))
    for name, values in series.items():
        ax.plot(steps, values, color=colors[name], linewidth=1.6, label=name)
    return fig, ax, series


def thresholds_figure(run: RunRecord) -> Figure | None:
    """Each threshold group's τ = sigmoid(s) over training (log scale when it spans decades) and, when
    the log holds it, each score's own learning s − s0 − (the controller's net shift), in logits:
    the spread between those lines is the learned allocation, the rest the controller's doing."""
    steps, series = _series(run.train_records, "thresholds")
    if not steps:
        return None
    learned_steps, learned = _series(run.train_records, "learned")
    fig = Figure(figsize=(11.0 if learned else 7.0, 4.2), layout="constrained")
    axes = fig.subplots(1, 2 if learned else 1, squeeze=False)[0]
    colors = color_map(list(series))
    panels = [(axes[0], steps, series, "Learned threshold τ of each component", "threshold τ = sigmoid(s), a weight magnitude")]
    if learned:
        panels.append((axes[1], learned_steps, learned, "Each score's own learning",
                       "s − s0 − controller's shift (logits)"))
    for ax, xs, lines, title, ylabel in panels:
        ax.set_title(f"{title} — {run.label}", fontsize=11)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        for name, values in lines.items():
            ax.plot(xs, values, color=colors.get(name, "black"), linewidth=1.6, label=name)
        ax.legend(fontsize=9)
    positive = [v for values in series.values() for v in values if v > 0]
    if positive and max(positive) / min(positive) > 100:
        _log_y(axes[0])
    if learned:
        axes[1].axhline(0.0, color="grey", linestyle=":", linewidth=1.0)
    return fig


def allocation_figure(run: RunRecord) -> Figure | None:
    """Each component's final sparsity next to what one global threshold gives at the same overall
    sparsity (result.json's "allocation"): the learned allocation. None without one."""
    allocation = (run.result or {}).get("allocation")
    if not allocation:
        return None
    names = list(allocation)
    fig, ax = _figure(f"Learned allocation against one global threshold — {run.label}", "component",
                      "sparsity (% of the component's weights)")
    xs = range(len(names))
    colors = color_map(names)
    ax.bar([x - 0.2 for x in xs], [100 * allocation[n]["sparsity"] for n in names], width=0.4,
           color=[colors[n] for n in names], label="learned (this run)")
    ax.bar([x + 0.2 for x in xs], [100 * allocation[n]["global"] for n in names], width=0.4, color="none",
           edgecolor="black", hatch="//", label="one global threshold, same overall sparsity")
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 105)
    ax.legend(fontsize=9, loc="lower right")
    return fig


def task_weights_figure(run: RunRecord) -> Figure | None:
    """The adaptive task weights over training (they sum to the number of tasks)."""
    drawn = _lines_figure(run, "task_weights", "Task weights during training", "loss weight (sum = number of tasks)")
    if drawn is None:
        return None
    fig, ax, _ = drawn
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1.0, label="equal weighting")
    ax.legend(fontsize=9)
    return fig


def losses_figure(run: RunRecord) -> Figure | None:
    """Each task's training loss (solid) and validation loss (dashed, dots), log scale."""
    steps, series = _series(run.train_records, "loss")
    if not steps:
        return None
    val_steps, val_series = _series(run.val_records, "val_loss")
    fig, ax = _figure(f"Task losses — {run.label}", "training step", "loss (log scale)")
    colors = color_map(list(series))
    for name, values in series.items():
        ax.plot(steps, values, color=colors[name], linewidth=1.4, label=f"{name} (train)")
        if name in val_series:
            ax.plot(val_steps, val_series[name], color=colors[name], linewidth=1.4, linestyle="--", marker="o",
                    markersize=4, label=f"{name} (val)")
    if all(v > 0 for values in [*series.values(), *val_series.values()] for v in values):
        _log_y(ax)
    ax.legend(fontsize=8, ncol=2)
    return fig


def layer_sparsity_figure(run: RunRecord) -> Figure | None:
    """Sparsity of every prunable layer of the finalized model, bars coloured and grouped by component
    (in model order), with each component's overall sparsity in the legend."""
    if not run.has_model:
        return None
    from adapmtl.sparsity import sparsity_report

    model, spec = RunDir(run.path).load_model()
    report = sparsity_report(model, **spec.scope.arguments())
    if report.zeros == 0:
        return None
    layers = list(report.layers.items())
    order = list(report.components)
    layers.sort(key=lambda item: order.index(item[1].component))  # stable: model order within a component
    colors = color_map(order)
    fig, ax = _figure(f"Sparsity of each layer of the final model — {run.label}",
                      f"prunable layers, grouped by component ({len(layers)} layers, model order)",
                      "sparsity (% of the layer's weights)", size=(9.0, 4.8))
    ax.bar(range(len(layers)), [100 * layer.sparsity for _, layer in layers], width=0.85,
           color=[colors[layer.component] for _, layer in layers])
    start = 0
    for name in order[:-1]:
        start += sum(1 for _, layer in layers if layer.component == name)
        ax.axvline(start - 0.5, color="grey", linewidth=0.8)
    ax.axhline(100 * report.overall, color="black", linestyle="--", linewidth=1.2)
    handles = [Patch(color=colors[name], label=f"{name}: {100 * c.sparsity:.1f} % of {c.numel:,} weights")
               for name, c in report.components.items()]
    handles.append(Line2D([], [], color="black", linestyle="--", label=f"overall: {100 * report.overall:.1f} %"))
    ax.set_xlim(-0.5, len(layers) - 0.5)
    ax.set_ylim(0, 105)
    ax.set_xticks([])
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=3, frameon=False)
    return fig


def delta_t_points(runs: Sequence[RunRecord], baseline: RunRecord, split: str = "test") -> dict[str, list[dict[str, float]]]:
    """{method: [{"target", "sparsity", "sparsity_std", "delta_t", "delta_t_std", "n"}]}: overall sparsity
    (%) and ΔT (%) against `baseline` of finished runs, averaged over runs sharing method and target
    (seeds); std is 0 for a single run. Runs whose ΔT is undefined are left out."""
    groups: dict[tuple[str, float], list[tuple[float, float]]] = defaultdict(list)
    for run in runs:
        if run.result is None or run.path == baseline.path:
            continue
        try:
            d = run_delta_t(run.result, baseline.result, split).overall
        except MetricError:
            continue
        groups[(run.method, round(run.target, 6))].append((100 * run.result["sparsity"]["overall"], d))
    points: dict[str, list[dict[str, float]]] = defaultdict(list)
    for (method, target), values in sorted(groups.items()):
        xs, ys = [x for x, _ in values], [y for _, y in values]
        points[method].append({"target": target, "sparsity": mean(xs), "sparsity_std": stdev(xs) if len(xs) > 1 else 0.0,
                               "delta_t": mean(ys), "delta_t_std": stdev(ys) if len(ys) > 1 else 0.0, "n": len(xs)})
    return dict(points)


def delta_t_figure(runs: Sequence[RunRecord], baseline: RunRecord, split: str = "test") -> Figure | None:
    """ΔT against the dense `baseline` versus overall sparsity, one line per method (mean ± std over seeds)."""
    points = delta_t_points(runs, baseline, split)
    if not points:
        return None
    fig, ax = _figure(f"ΔT against {baseline.label} vs overall sparsity ({split} split)",
                      "overall sparsity (% of prunable weights)", "ΔT (%; > 0 = better than dense)")
    colors = color_map(list(points))
    for i, (method, group) in enumerate(points.items()):
        ax.errorbar([p["sparsity"] for p in group], [p["delta_t"] for p in group],
                    xerr=[p["sparsity_std"] for p in group], yerr=[p["delta_t_std"] for p in group],
                    color=colors[method], marker=MARKERS[i % len(MARKERS)], markersize=6, capsize=3, linewidth=1.5,
                    label=method if max(p["n"] for p in group) == 1 else f"{method} (mean ± std over seeds)")
    ax.axhline(0.0, color="black", linestyle="--", linewidth=1.0, label=f"{baseline.label} (dense)")
    ax.legend(fontsize=9)
    return fig
