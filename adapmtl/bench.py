"""`adapmtl bench`: methods × target sparsities × seeds through one engine, resumable.

A bench file is an ordinary run config (data, model, method, train: what every run
shares) plus a `bench` section:

    bench:
      methods: [adapmtl, snip, lth]     # dense is always added: it is the ΔT baseline
      targets: [0.5, 0.7, 0.9]
      seeds: [0, 1]
      out_dir: runs/bench_synthetic

The shared `method:` section holds options for the methods that have them: each run takes
the keys its method declares (e.g. `update_every` reaches gmp and disparse_dynamic only);
a key that no benched method has is an error.

Every (method, target, seed) is a normal engine run in `out_dir/<method>/t<target>/seed<seed>`
(dense: `out_dir/dense/seed<seed>`), so `adapmtl eval` works on each. A run with a
result.json is skipped; one with a checkpoint but no result is resumed. The dense run of a
seed is the ΔT baseline of that seed's runs; figures are then averaged over seeds.
Writes `bench.md` (paper-style tables, mean ± std over seeds), `bench.csv` (one row per
method and target; `<column> std` beside each mean) and `bench.json` (the bench config,
every run's result, the aggregated rows).
"""
from __future__ import annotations

import csv
import json
import math
import platform
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapmtl.engine.config import ConfigError, apply_overrides, read_yaml, validate_config
from adapmtl.engine.trainer import LAST, RESULT_FILE, resume, train
from adapmtl.methods import METHODS
from adapmtl.report import comparison_rows

BASELINE = "dense"
SUMMARY_COLUMNS = ("train iters", "dense iters")


class BenchSection(BaseModel):
    """The `bench` section of a bench file."""

    model_config = ConfigDict(extra="forbid")
    methods: list[str] = Field(min_length=1)
    targets: list[float] = Field(min_length=1)
    seeds: list[int] = Field([0], min_length=1)
    out_dir: str = "runs/bench"
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads for the runs; default: torch's")

    @field_validator("methods")
    @classmethod
    def _known(cls, methods: list[str]) -> list[str]:
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; expected some of {sorted(METHODS)}")
        return list(dict.fromkeys(m for m in methods if m != BASELINE))

    @field_validator("targets")
    @classmethod
    def _sparsities(cls, targets: list[float]) -> list[float]:
        bad = [t for t in targets if not 0 < t < 1]
        if bad:
            raise ValueError(f"targets must lie in (0, 1), got {bad}")
        return targets


@dataclass(frozen=True)
class BenchRun:
    """One run of the bench: its method, target (0 for dense), seed and folder."""

    method: str
    target: float
    seed: int
    run_dir: Path

    @property
    def label(self) -> str:
        return self.method if self.method == BASELINE else f"{self.method} target={self.target:g}"


@dataclass
class Bench:
    """A parsed bench file: the shared run config (raw dict) and the bench section."""

    base: dict[str, Any]
    section: BenchSection
    source: str

    @property
    def out_dir(self) -> Path:
        return Path(self.section.out_dir)

    def runs(self) -> list[BenchRun]:
        """Dense first for every seed, then every method × target × seed."""
        runs = [BenchRun(BASELINE, 0.0, s, self.out_dir / BASELINE / f"seed{s}") for s in self.section.seeds]
        for method in self.section.methods:
            for target in self.section.targets:
                runs += [BenchRun(method, target, s, self.out_dir / method / f"t{target:g}" / f"seed{s}")
                         for s in self.section.seeds]
        return runs

    def config(self, run: BenchRun):
        """The engine config of one run: the shared one with the run's method, target and seed."""
        raw = json.loads(json.dumps(self.base))
        accepted = METHODS[run.method].options_type.model_fields
        shared = {k: v for k, v in (raw.get("method") or {}).items() if k in accepted}
        raw["method"] = {**shared, "name": run.method, **({"target": run.target} if run.target else {})}
        raw["seed"] = run.seed
        raw["name"] = run.run_dir.name
        return validate_config(raw, f"{self.source} (run {run.label} seed={run.seed})")


def load_bench(path: str | Path, overrides: Sequence[str] = ()) -> Bench:
    """Read a bench file (a path or a preset name such as `bench_synthetic`) with key=value
    overrides (`bench.seeds=[0]`, `train.steps=100`); every run's config is validated now."""
    path, raw = read_yaml(path)
    raw = apply_overrides(raw, overrides)
    if not isinstance(raw, dict) or "bench" not in raw:
        raise ConfigError(f"{path}: a bench file needs a `bench` section with methods, targets, seeds, out_dir")
    try:
        section = BenchSection.model_validate(raw.pop("bench"))
    except ValidationError as error:
        problems = "; ".join(f"`bench.{'.'.join(map(str, e['loc']))}`: {e['msg']}" for e in error.errors())
        raise ConfigError(f"{path}: {problems}") from None
    bench = Bench(raw, section, str(path))
    known = {key for m in (BASELINE, *section.methods) for key in METHODS[m].options_type.model_fields}
    foreign = sorted(set(raw.get("method") or {}) - known)
    if foreign:
        raise ConfigError(f"{path}: `method` option(s) {foreign} belong to none of the benched methods "
                          f"({', '.join(section.methods)})")
    for run in bench.runs():
        bench.config(run)
    return bench


def run_bench(bench: Bench, echo: Callable[[str], None] = partial(print, flush=True)) -> dict[str, Any]:
    """Run every missing run of `bench` (finished ones are skipped, interrupted ones resumed),
    then write bench.md, bench.csv and bench.json to its out_dir; returns the JSON content."""
    runs = bench.runs()
    if bench.section.threads:
        torch.set_num_threads(bench.section.threads)
    started = time.perf_counter()
    for i, run in enumerate(runs, 1):
        where = f"run {i}/{len(runs)}: {run.method}" + (f" target={run.target:g}" if run.target else "") + f" seed={run.seed}"
        if (run.run_dir / RESULT_FILE).is_file():
            echo(f"{where}: finished, skipped")
            continue
        t0 = time.perf_counter()
        if (run.run_dir / LAST).is_file():
            echo(f"{where}: resuming {run.run_dir}")
            resume(run.run_dir)
        else:
            echo(f"{where}: training into {run.run_dir}")
            train(bench.config(run), run.run_dir)
        echo(f"{where}: done in {time.perf_counter() - t0:.0f} s (bench {time.perf_counter() - started:.0f} s)")
    return write_outputs(bench)


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def aggregate(bench: Bench) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The finished runs and one row per (method, target): every column's mean and std over seeds.

    Each run is compared (comparison_rows) with the dense run of its own seed; a seed whose
    dense run is missing is left out. Rows carry `seeds` (how many were averaged).
    """
    runs, per_seed_rows = [], {}
    results = {r: json.loads((r.run_dir / RESULT_FILE).read_text())
               for r in bench.runs() if (r.run_dir / RESULT_FILE).is_file()}
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
    first_of_label: dict[str, BenchRun] = {}
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
    value = row.get(column)
    if value is None:
        return "n/a"
    if column in SUMMARY_COLUMNS:
        return f"{value:.0f}"
    sign = "+" if column.startswith("ΔT") else ""
    std = row.get(f"{column} std", 0.0)
    return f"{value:{sign}.2f} ± {std:.2f}" if row["seeds"] > 1 else f"{value:{sign}.2f}"


def _markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(["method", "target", *columns]) + " |", "|" + "---|" * (len(columns) + 2)]
    for row in rows:
        target = "–" if row["method"] == BASELINE else f"{row['target']:g}"
        lines.append("| " + " | ".join([row["method"], target, *(_cell(row, c) for c in columns)]) + " |")
    return "\n".join(lines)


def tables(rows: list[dict[str, Any]]) -> str:
    """Two Markdown tables: the summary (ΔT per task, sparsities, ΔT, iterations) and every metric."""
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
    """A Markdown pivot of overall ΔT: one row per sparse method, one column per target."""
    sparse = [r for r in rows if r["method"] != BASELINE]
    targets = sorted({r["target"] for r in sparse})
    lines = ["| method | " + " | ".join(f"{t:g}" for t in targets) + " |", "|---|" + "---|" * len(targets)]
    for method in dict.fromkeys(r["method"] for r in sparse):
        cells = {r["target"]: _cell(r, "ΔT") for r in sparse if r["method"] == method}
        lines.append(f"| {method} | " + " | ".join(cells.get(t, "missing") for t in targets) + " |")
    return "\n".join(lines)


def write_outputs(bench: Bench) -> dict[str, Any]:
    """Aggregate the finished runs and write bench.md, bench.csv, bench.json; returns the JSON content."""
    runs, rows = aggregate(bench)
    out = bench.out_dir
    out.mkdir(parents=True, exist_ok=True)
    expected = len(bench.runs())
    missing = [f"{r.label} seed={r.seed}" for r in bench.runs() if not (r.run_dir / RESULT_FILE).is_file()]
    text = tables(rows)
    if missing:
        text += f"\nMissing {len(missing)} of {expected} runs: {', '.join(missing)}\n"
    (out / "bench.md").write_text(text)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    content = {
        "bench": bench.section.model_dump(), "config": bench.base, "source": bench.source,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "missing": missing, "runs": runs, "rows": rows,
    }
    (out / "bench.json").write_text(json.dumps(content, indent=2))
    return content
