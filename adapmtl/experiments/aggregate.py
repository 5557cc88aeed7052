"""What a bench's finished runs say: each run against the dense run of its seed, then mean ± std
over seeds, written as `bench.md` (paper-style tables), `bench.csv` (one row per method and target;
`<column> std` beside each mean) and `bench.json` (the bench config, every run's result, the rows).
Cells are formatted by `adapmtl.report.table`, as in `adapmtl report`.
"""
from __future__ import annotations

import json
import math
import platform
from typing import TYPE_CHECKING, Any

import torch

from adapmtl.engine.rundir import RunDir
from adapmtl.report.table import comparison_rows, csv_table, format_cell, markdown_table

if TYPE_CHECKING:  # bench.py imports this module to write its outputs
    from adapmtl.experiments.bench import Bench

BASELINE = "dense"
"""The method every bench run is compared with (ΔT); a bench always runs it."""
SUMMARY_COLUMNS = ("train iters", "dense iters")


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def aggregate(bench: Bench) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The finished runs and one row per (method, target): every column's mean and std over seeds.

    Each run is compared (comparison_rows) with the dense run of its own seed; a seed whose
    dense run is missing is left out. Rows carry `seeds` (how many were averaged); ΔT and
    sparsities are in %, metrics in their units. Runs: {method, target, seed, run_dir, result}.
    Raises RunDirError if a run's result.json is damaged.
    """
    runs, per_seed_rows = [], {}
    results = {r: result for r in bench.runs() if (result := RunDir(r.run_dir).result()) is not None}
    for run, result in results.items():
        runs.append({"method": run.method, "target": run.target, "seed": run.seed,
                     "run_dir": str(run.run_dir), "result": result})
    for seed in bench.section.seeds:
        seed_results = {r.label: res for r, res in results.items() if r.seed == seed}
        if BASELINE not in seed_results:
            continue
        for row in comparison_rows(seed_results, BASELINE):
            result = seed_results[row["run"]]
            row["train iters"] = result["train_iterations"]
            row["dense iters"] = result.get("dense_iterations", 0)
            per_seed_rows.setdefault(row["run"], []).append(row)
    rows = []
    first_of_label = {}
    for run in bench.runs():
        first_of_label.setdefault(run.label, run)
    for run in first_of_label.values():
        group = per_seed_rows.get(run.label)
        if not group:
            continue
        row: dict[str, Any] = {"run": run.label, "method": run.method, "target": run.target, "seeds": len(group)}
        for column in dict.fromkeys(k for r in group for k in r):
            values = [r[column] for r in group if isinstance(r.get(column), (int, float))]
            if column in ("run", "note") or not values:
                continue
            row[column], row[f"{column} std"] = _mean_std([float(v) for v in values])
        rows.append(row)
    return runs, rows


def _cell(row: dict[str, Any], column: str) -> str:
    if column in SUMMARY_COLUMNS:  # iteration counts: whole numbers, no spread
        return format_cell(column, row.get(column), digits=0)
    return format_cell(column, row.get(column), std=row.get(f"{column} std") if row["seeds"] > 1 else None)


def _markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    shown = [{"method": row["method"], "target": "–" if row["method"] == BASELINE else f"{row['target']:g}",
              **{c: _cell(row, c) for c in columns}} for row in rows]
    return markdown_table(shown, columns=["method", "target", *columns])


def tables(rows: list[dict[str, Any]]) -> str:
    """Markdown: the headline pivot, the summary (ΔT per task, sparsities, ΔT, iterations) and every
    metric, one row per method and target (`rows` as `aggregate` makes them)."""
    keys = [k for k in dict.fromkeys(k for r in rows for k in r)
            if k not in ("run", "method", "target", "seeds") and not k.endswith(" std")]
    summary = [k for k in keys if k.startswith("ΔT ")] + [k for k in keys if k.startswith("sparsity")] \
        + ["ΔT", *SUMMARY_COLUMNS]
    metrics = [k for k in keys if k not in summary]
    seeds = max((r["seeds"] for r in rows), default=0)
    note = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
    return (f"ΔT in % against the dense model of the same seed (positive = better); sparsity in %; {note}.\n\n"
            f"ΔT by method and target sparsity:\n\n{headline(rows)}\n\n"
            f"{_markdown(rows, summary)}\n\nTest metrics:\n\n{_markdown(rows, metrics)}\n")


def headline(rows: list[dict[str, Any]]) -> str:
    """A Markdown pivot of overall ΔT: one row per sparse method, one column per target ("missing"
    where that run has not finished)."""
    sparse = [r for r in rows if r["method"] != BASELINE]
    targets = [f"{t:g}" for t in sorted({r["target"] for r in sparse})]
    pivot = [{"method": method, **dict.fromkeys(targets, "missing"),
              **{f"{r['target']:g}": _cell(r, "ΔT") for r in sparse if r["method"] == method}}
             for method in dict.fromkeys(r["method"] for r in sparse)]
    return markdown_table(pivot, columns=["method", *targets])


def write_outputs(bench: Bench) -> dict[str, Any]:
    """Aggregate the finished runs and write bench.md, bench.csv, bench.json into the bench's
    out_dir (created if needed); returns the JSON content (with `missing`: the unfinished runs).
    Raises RunDirError if a run's result.json is damaged, OSError if out_dir cannot be written."""
    runs, rows = aggregate(bench)
    out = bench.out_dir
    out.mkdir(parents=True, exist_ok=True)
    expected = len(bench.runs())
    missing = [f"{r.label} seed={r.seed}" for r in bench.runs() if not RunDir(r.run_dir).finished]
    text = tables(rows)
    if missing:
        text += f"\nMissing {len(missing)} of {expected} runs: {', '.join(missing)}\n"
    (out / "bench.md").write_text(text)
    (out / "bench.csv").write_text(csv_table(rows))
    content = {
        "bench": bench.section.model_dump(), "config": bench.base, "source": bench.source,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "missing": missing, "runs": runs, "rows": rows,
    }
    (out / "bench.json").write_text(json.dumps(content, indent=2))
    return content
