"""`adapmtl report`: tables, figures and one HTML page for one or many run folders."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from adapmtl.engine.rundir import RunDir
from adapmtl.report.html import figure_html, heading, html_page, paragraph
from adapmtl.report.plots import (allocation_figure, delta_t_figure, layer_sparsity_figure, losses_figure, save_figure,
                                  sparsity_figure, task_weights_figure, thresholds_figure)
from adapmtl.report.runs import ReportError, RunRecord, load_run, load_runs
from adapmtl.report.sensitivity import read_sensitivity, sensitivity_figure
from adapmtl.report.table import comparison_rows, csv_table, html_table, markdown_table

RUN_FIGURES: list[tuple[str, Callable[[RunRecord], object], str]] = [
    ("sparsity", sparsity_figure, "Sparsity of each component (and overall, dashed) during training; the dotted "
     "line is the target; grey ticks on top mark where the controller stepped in. The paper's Figure 3."),
    ("thresholds", thresholds_figure, "Each component's learned threshold τ (weights with |W| ≤ τ are zero) and, "
     "right, how far each score moved by its own learning, without the controller's common shifts."),
    ("allocation", allocation_figure, "Each component's final sparsity (filled) next to what one global threshold "
     "gives at the same overall sparsity (hatched): the allocation the thresholds learned."),
    ("task_weights", task_weights_figure, "The adaptive loss weight of each task during training."),
    ("losses", losses_figure, "Training loss of each task (solid) and validation loss (dashed)."),
    ("layer_sparsity", layer_sparsity_figure, "Sparsity of every prunable layer of the final model, in model order, "
     "coloured by component; the legend gives each component's sparsity and weight count."),
]


@dataclass
class ReportFiles:
    """What `write_report` wrote (figures: PNG and SVG of each)."""

    out_dir: Path
    html: Path
    table_md: Path | None = None
    table_csv: Path | None = None
    figures: list[Path] = field(default_factory=list)
    table: str = ""
    """The table for a terminal: one column per run when there are at most 6, else one row per run."""


def resolve_baseline(runs: list[RunRecord], baseline: str | None) -> RunRecord | None:
    """The dense run ΔT is measured against: `baseline` as a label among `runs` or a run folder
    (added to `runs` when outside them); by default the first finished run of a method that does not prune (dense).

    Raises ReportError if `baseline` names no run, or a run that has not finished."""
    if baseline is None:
        return next((r for r in runs if not r.sparse and r.result is not None), None)
    found = next((r for r in runs if r.label == baseline), None)
    if found is None and Path(baseline).is_dir():
        found = next((r for r in runs if r.path == Path(baseline).resolve()), None)
        if found is None:
            found = load_run(Path(baseline).resolve(), label=f"{Path(baseline).name} (baseline)")
            runs.insert(0, found)
    if found is None:
        raise ReportError(f"baseline {baseline!r} is neither a run folder nor one of the runs {[r.label for r in runs]}")
    if found.result is None:
        raise ReportError(f"baseline {found.path} has not finished (no result.json): ΔT needs its test metrics")
    return found


def _stem(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label.replace(os.sep, "__"))


def write_report(paths: Iterable[str | Path], out_dir: str | Path | None = None, *, baseline: str | None = None,
                 split: str = "test", figures: bool = True) -> ReportFiles:
    """Write the comparison table (table.md, table.csv), the figures (figures/*.png, *.svg) and
    report.html (the tables and figures in one self-contained file) for the runs in `paths`
    (run folders, or folders holding runs, such as a bench's output).

    out_dir: default RUN_DIR/report for one run, else <common folder of the runs>/report.
    baseline: the dense run for ΔT (a label or a run folder); default: the first finished dense run;
        without one, the table has no ΔT columns. split: "test" or "val" (the table's metrics).
    Raises ReportError (no runs, an unknown or unfinished baseline, a damaged run file) or ConfigError.
    """
    if split not in ("test", "val"):
        raise ReportError(f"split must be 'test' or 'val', got {split!r}")
    runs = load_runs(paths)
    base = resolve_baseline(runs, baseline)
    if out_dir is None:
        out_dir = RunDir(runs[0].path if len(runs) == 1 else Path(os.path.commonpath([r.path for r in runs]))).report_dir
    out = ReportFiles(Path(out_dir), Path(out_dir) / "report.html")
    out.out_dir.mkdir(parents=True, exist_ok=True)
    blocks = [paragraph(f"{len(runs)} run(s): " + ", ".join(f"{r.label} ({r.method}"
                                                            + (f", target {100 * r.target:g} %" if r.target else "")
                                                            + ("" if r.result else ", unfinished") + ")" for r in runs))]

    finished = [r for r in runs if r.result is not None]
    if finished:
        first = [base] if base is not None else []  # the baseline's row on top, as in the paper
        rows = comparison_rows({r.label: r.result for r in first + [r for r in finished if r is not base]},
                               base.label if base else None, split)
        out.table = markdown_table(rows, transpose=len(rows) <= 6)
        against = f"ΔT in % against {base.label} (positive = better)" if base else "no dense run: no ΔT"
        out.table_md = out.out_dir / "table.md"
        out.table_md.write_text(f"{split} split; metrics in their units, sparsity in %; {against}.\n\n"
                                f"{markdown_table(rows)}\n")
        out.table_csv = out.out_dir / "table.csv"
        out.table_csv.write_text(csv_table(rows))
        blocks += [heading("Comparison"), paragraph(f"{split} split; sparsity in % of prunable weights; {against}."),
                   html_table(rows)]
    if not figures:
        out.html.write_text(html_page("adapmtl report", blocks))
        return out

    def add(fig, stem: str, caption: str) -> None:
        if fig is None:
            return
        png, svg = save_figure(fig, out.out_dir / "figures" / stem)
        out.figures += [png, svg]
        blocks.append(figure_html(png, caption))

    if base is not None and len(finished) > 1:
        blocks.append(heading("ΔT against overall sparsity"))
        add(delta_t_figure(runs, base, split), "delta_t_vs_sparsity",
            f"ΔT ({split} split) against {base.label} versus overall sparsity, one line per method; runs that share "
            "method and target are averaged (error bars: std over seeds).")
    for run in runs:
        blocks.append(heading(f"Run {run.label}"))
        blocks.append(paragraph(f"{run.path} — method {run.method}"
                                + (f", target {100 * run.target:g} %" if run.target else "")
                                + (f", final sparsity {100 * run.result['sparsity']['overall']:.2f} %" if run.result else ", unfinished")))
        blocks += run_account(run)
        for kind, make, caption in RUN_FIGURES:
            add(make(run), f"{_stem(run.label)}_{kind}", caption)
        sweeps = read_sensitivity(run.path)
        for sweep in sweeps:
            add(sensitivity_figure([sweep]), f"{_stem(run.label)}_sensitivity_{sweep.component}",
                f"Sensitivity of {sweep.component}: each task's metric relative to the unpruned model when only "
                f"{sweep.component}'s smallest weights are removed, without retraining (the paper's Figure 5).")
    out.html.write_text(html_page("adapmtl report", blocks))
    return out


def allocation_rows(result: dict) -> list[dict]:
    """One row per component: its final sparsity, one global threshold's at the same overall sparsity,
    the difference (pp) and its score's own learning (logits), from result.json; [] without them."""
    allocation = result.get("allocation") or {}
    learned = (result.get("controller") or {}).get("learned", {})
    return [{"component": c, "sparsity %": 100 * a["sparsity"], "one global threshold %": 100 * a["global"],
             "learned − global (pp)": 100 * (a["sparsity"] - a["global"]), "score's own learning": learned.get(c)}
            for c, a in allocation.items()]


def run_account(run: RunRecord) -> list[str]:
    """HTML blocks saying how a finished run's sparsity came about: the controller's interventions
    and shift, the learned allocation, and the collapse guard's work (a warning for a collapsed layer)."""
    result = run.result or {}
    blocks = []
    controller = result.get("controller")
    if controller:
        blocks.append(paragraph(
            f"The controller stepped in at {controller['interventions']} of its {controller['measurements']} "
            f"measurements (total shift {controller['total_shift']:.2f} logits, net {controller['net_shift']:+.2f}); "
            "each score's own learning is in the table and the threshold figure."))
    rows = allocation_rows(result)
    if rows:
        blocks.append(html_table(rows))
    guard = result.get("guard") or {}
    if guard.get("guarded"):
        blocks.append(paragraph(f"The collapse guard (min_density {guard['min_density']:g}) held "
                                f"{len(guard['guarded'])} layer(s) at their minimum density: {', '.join(guard['guarded'])}."))
    if guard.get("collapsed"):
        blocks.append(paragraph(f"Warning: {len(guard['collapsed'])} layer(s) ended all zero, so their outputs no "
                                f"longer depend on their inputs: {', '.join(guard['collapsed'])}."))
    return blocks


def report_summary(files: ReportFiles) -> str:
    """What the command prints: the table and where everything went."""
    lines = [files.table] if files.table else []
    lines += [f"report: {files.html}"]
    if files.table_md:
        lines += [f"tables: {files.table_md}, {files.table_csv}"]
    if files.figures:
        lines += [f"figures: {len(files.figures) // 2} (PNG + SVG) in {files.out_dir / 'figures'}"]
    return "\n".join(lines)
