"""What a bench's finished runs say: each run against the dense run of its seed (ΔT, paired per
seed), its mean and 95 % interval over seeds, each method against the bench's `compare_to` method
(win / loss / tie), and the sanity checks that say whether the setting can rank methods at all
(`adapmtl.experiments.stats`). Written as `bench.md` (the checks first, then the tables),
`bench.csv` (one row per method and target; `<column> std` beside each mean, `ΔT low`/`ΔT high`
the 95 % interval) and `bench.json` (the bench config, every run's result, the rows, the analysis).
Cells are formatted by `adapmtl.report.table`, as in `adapmtl report`.
"""
from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch

from adapmtl.engine.config import Config
from adapmtl.engine.data import build_dataset
from adapmtl.engine.rundir import RunDir
from adapmtl.models.spec import ModelSpec
from adapmtl.experiments.mechanism import mechanism_table
from adapmtl.experiments.stats import (
    Check, Interval, check_convergence, check_heads_share, check_noise_floor, check_random_worse, mean_interval,
    noise_floor, paired_differences, setting_label, verdict,
)
from adapmtl.files import write_atomic
from adapmtl.metrics import MetricError, run_delta_t
from adapmtl.report.table import comparison_rows, csv_table, format_cell, markdown_table
from adapmtl.sparsity import sparsify, sparsity_report

if TYPE_CHECKING:  # bench.py imports this module to write its outputs
    from adapmtl.experiments.bench import Bench

BASELINE = "dense"
"""The method every bench run is compared with (ΔT); a bench always runs it."""
SUMMARY_COLUMNS = ("train iters", "dense iters")
RANDOM_CHECK_TARGET = 0.9
"""`random` at this target must be clearly worse than dense for the setting to be valid."""


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


def component_numel(config: Config) -> dict[str, int]:
    """{component: prunable weights} of the model `config` builds (backbone, then one entry per
    head), counted as AdapMTL prunes them: `sparsify`, then `sparsity_report`'s numel.
    Raises DatasetError if the dataset cannot be opened (its task table sizes the heads)."""
    dataset = build_dataset(config, "train")
    spec = ModelSpec.from_options(config.model, dataset.task_channels)
    model = sparsify(spec.build(), **spec.scope.arguments())
    return {name: component.numel for name, component in sparsity_report(model).components.items()}


@dataclass
class Analysis:
    """What the finished runs of a bench say, paired per seed (ΔT in %).

    numel: {component: prunable weights}. cross: {"dense seed j on test i": ΔT of seed j's dense
    model against seed i's, on seed i's test set}. noise_floor: their RMS (None: no pair).
    delta: {run label: {seed: ΔT against that seed's dense run}}. intervals: {run label: mean and
    95 % interval of delta}. versus: {run label: (its ΔT minus compare_to's at the same target,
    paired per seed, as an interval; "win"/"loss"/"tie" or None)}. convergence: the interval of
    dense at the convergence budget against dense. checks: the sanity checks; label: the verdict
    on the setting ("setting valid: ...", "setting invalid: ...", "setting not fully checked: ...").
    undefined: {run label: why its ΔT is undefined (e.g. a dense metric of 0)} for finished runs.
    """

    numel: dict[str, int]
    cross: dict[str, float]
    noise_floor: Optional[float]
    delta: dict[str, dict[int, float]]
    intervals: dict[str, Interval]
    versus: dict[str, tuple[Interval, Optional[str]]]
    convergence: Optional[Interval]
    checks: list[Check]
    label: str
    undefined: dict[str, str] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return all(c.status == "pass" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for bench.json."""
        return {"numel": self.numel, "heads_share": 1 - self.numel.get("backbone", 0) / max(1, sum(self.numel.values())),
                "cross": self.cross, "noise_floor": self.noise_floor,
                "delta": {k: {str(s): v for s, v in d.items()} for k, d in self.delta.items()},
                "intervals": {k: asdict(v) for k, v in self.intervals.items()},
                "versus": {k: {**asdict(i), "verdict": v} for k, (i, v) in self.versus.items()},
                "convergence": None if self.convergence is None else asdict(self.convergence),
                "checks": [asdict(c) for c in self.checks], "label": self.label, "valid": self.valid}


def _overall_delta(result: dict[str, Any], base: dict[str, Any], undefined: Optional[dict[str, str]] = None,
                   label: str = "") -> Optional[float]:
    """Overall ΔT of `result` against `base` on the test split; None where it is undefined (e.g. a
    baseline metric of 0), with the reason put in `undefined[label]` (the tables say "n/a" and why)."""
    try:
        return run_delta_t(result, base).overall
    except MetricError as error:
        if undefined is not None:
            undefined.setdefault(label, str(error))
        return None


def analyse(bench: Bench) -> Analysis:
    """Pair every finished run with its seed's dense run, measure the noise floor from the
    cross-evaluated dense models (`bench.cross_file`, written by `cross_evaluate`), and run the
    sanity checks. Runs or files not there yet are left out (their checks read "not checked").
    Raises RunDirError if a result.json is damaged, DatasetError if the dataset cannot be opened,
    OSError or ValueError if a cross-evaluation file cannot be read or is not JSON."""
    section = bench.section
    runs = bench.runs()
    results = {r: res for r in runs if (res := RunDir(r.run_dir).result()) is not None}
    dense = {r.seed: results[r] for r in bench.dense_runs().values() if r in results}
    cross = {}
    for test_seed, base in dense.items():
        for model_seed in dense:
            path = bench.cross_file(model_seed, test_seed)
            if model_seed != test_seed and path.is_file():
                d = _overall_delta(json.loads(path.read_text()), base)
                if d is not None:
                    cross[f"dense seed {model_seed} on test {test_seed}"] = d
    floor = noise_floor(cross.values())
    delta: dict[str, dict[int, float]] = {}
    undefined: dict[str, str] = {}
    for run, result in results.items():
        if run.seed in dense and not (run.method == BASELINE and run.budget == 1):
            d = _overall_delta(result, dense[run.seed], undefined, run.label)
            if d is not None:
                delta.setdefault(run.label, {})[run.seed] = d
    intervals = {label: mean_interval(list(d.values())) for label, d in delta.items()}
    versus = {}
    for method in section.methods:
        for target in section.targets:
            reference = delta.get(f"{section.compare_to} target={target:g}", {})
            label = f"{method} target={target:g}"
            pairs = paired_differences(delta.get(label, {}), reference)
            if method != section.compare_to and pairs:
                difference = mean_interval(list(pairs.values()))
                versus[label] = (difference, verdict(difference, floor))
    convergence = None
    if section.convergence is not None:
        convergence = intervals.get(f"{BASELINE} x{section.convergence:g} steps")
    numel = component_numel(bench.config(runs[0]))
    checks = [check_heads_share(numel, section.min_head_share),
              check_noise_floor(floor, len(cross), section.max_noise_floor),
              check_convergence(convergence, floor, section.convergence),
              check_random_worse(intervals.get(f"random target={RANDOM_CHECK_TARGET:g}"), floor, RANDOM_CHECK_TARGET)]
    return Analysis(numel, cross, floor, delta, intervals, versus, convergence, checks, setting_label(checks),
                    undefined)


def _cell(row: dict[str, Any], column: str) -> str:
    if column in SUMMARY_COLUMNS:  # iteration counts: whole numbers, no spread
        return format_cell(column, row.get(column), digits=0)
    return format_cell(column, row.get(column), std=row.get(f"{column} std") if row["seeds"] > 1 else None)


def _markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    shown = [{"method": row["run"] if row["method"] == BASELINE else row["method"],
              "target": "–" if row["method"] == BASELINE else f"{row['target']:g}",
              **{c: _cell(row, c) for c in columns}} for row in rows]
    return markdown_table(shown, columns=["method", "target", *columns])


_NOT_COLUMNS = ("run", "method", "target", "seeds", "ΔT low", "ΔT high")


def tables(rows: list[dict[str, Any]]) -> str:
    """Markdown: the summary (ΔT per task, sparsities, ΔT, iterations) and every metric, one row per
    method and target (`rows` as `aggregate` makes them), as mean ± std over seeds."""
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in _NOT_COLUMNS and not k.endswith(" std")]
    summary = [k for k in keys if k.startswith("ΔT ")] + [k for k in keys if k.startswith("sparsity")] \
        + ["ΔT", *SUMMARY_COLUMNS]
    metrics = [k for k in keys if k not in summary]
    seeds = max((r["seeds"] for r in rows), default=0)
    note = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
    return (f"Per task, per component ({note}; ΔT in % against the dense model of the same seed, "
            f"sparsity in %):\n\n{_markdown(rows, summary)}\n\nTest metrics:\n\n{_markdown(rows, metrics)}\n")


_WORDS = {"win": "better", "loss": "worse", "tie": "tie"}


def headline(bench: Bench, analysis: Analysis) -> str:
    """A Markdown pivot of overall ΔT against dense: one row per sparse method, one column per
    target; each cell the mean [95 % interval] over seeds and whether it is better, worse or a tie
    with dense ("missing" where no run has finished)."""
    targets = [f"{t:g}" for t in bench.section.targets]
    pivot = []
    for method in bench.section.methods:
        row = {"method": method}
        for target in targets:
            interval = analysis.intervals.get(f"{method} target={target}")
            word = None if interval is None else verdict(interval, analysis.noise_floor)
            if interval is None:
                row[target] = "n/a (ΔT undefined)" if f"{method} target={target}" in analysis.undefined else "missing"
            else:
                row[target] = interval.text() + (f" {_WORDS[word]}" if word else "")
        pivot.append(row)
    table = markdown_table(pivot, columns=["method", *targets])
    reasons = sorted(set(analysis.undefined.values()))
    return table + ("".join(f"\n\nΔT undefined: {reason}" for reason in reasons) if reasons else "")


def versus_table(bench: Bench, analysis: Analysis) -> str:
    """A Markdown pivot of each method against `compare_to`, paired per seed: "win", "loss" or
    "tie" (for the row's method), then the mean difference of ΔT [95 % interval]."""
    targets = [f"{t:g}" for t in bench.section.targets]
    pivot = []
    for method in bench.section.methods:
        if method == bench.section.compare_to:
            continue
        row = {"method": method}
        for target in targets:
            entry = analysis.versus.get(f"{method} target={target}")
            row[target] = "missing" if entry is None else f"{entry[1] or 'n/a'} {entry[0].text()}"
        pivot.append(row)
    return markdown_table(pivot, columns=["method", *targets])


def report_text(bench: Bench, rows: list[dict[str, Any]], analysis: Analysis,
                runs: Sequence[dict[str, Any]] = ()) -> str:
    """bench.md: the verdict on the setting and its sanity checks, the ΔT pivot against dense with
    95 % intervals, each method against `compare_to`, how the threshold runs among `runs` (aggregate()'s)
    reached their sparsity (`adapmtl.experiments.mechanism`), then the detailed tables."""
    checks = markdown_table([{"check": c.name, "value": c.value, "rule": c.rule, "status": c.status}
                             for c in analysis.checks], columns=["check", "value", "rule", "status"])
    heading = analysis.label if analysis.valid else f"{analysis.label.split(':')[0]}, not a ranking"
    floor = "unknown" if analysis.noise_floor is None else f"{analysis.noise_floor:.2f}"
    seeds = len(bench.section.seeds)
    rule = (f"Mean [95 % t interval] over up to {seeds} seed{'s' if seeds > 1 else ''}, paired per seed; a difference within the noise "
            f"floor ({floor} ΔT) or whose interval contains 0 is a tie.")
    reference = bench.section.compare_to
    mechanism = mechanism_table(runs)
    pretrain = bench.pretrain_run()
    start = ("" if pretrain is None else
             f"Every run, dense included, starts from one dense model pretrained for {bench.section.pretrain['steps']} "
             f"steps (`{pretrain.run_dir}`, `bench.pretrain`).\n\n")
    return (f"# Bench `{bench.source}`: {analysis.label}\n\n{start}"
            f"Sanity checks (the table can rank methods only if all pass):\n\n{checks}\n\n"
            f"## ΔT against dense ({heading})\n\n"
            f"ΔT in % against the dense model of the same seed (positive = better). {rule}\n\n"
            f"{headline(bench, analysis)}\n\n"
            f"## Each method against {reference} ({heading})\n\n"
            f"The row's ΔT minus {reference}'s, seed by seed: win = the row's method is better than {reference}. "
            f"{rule}\n\n{versus_table(bench, analysis)}\n\n"
            + (f"## How the threshold runs got there\n\n{mechanism}\n\n" if mechanism else "")
            + f"## Details\n\n{tables(rows)}")


def write_outputs(bench: Bench) -> dict[str, Any]:
    """Aggregate the finished runs and write bench.md, bench.csv, bench.json into the bench's
    out_dir (created if needed); returns the JSON content (with `missing`: the unfinished runs).
    Raises RunDirError if a run's result.json is damaged, OSError if out_dir cannot be written."""
    runs, rows = aggregate(bench)
    analysis = analyse(bench)
    for row in rows:
        interval = analysis.intervals.get(row["run"])
        if interval is not None and interval.low is not None:
            row["ΔT low"], row["ΔT high"] = interval.low, interval.high
    out = bench.out_dir
    out.mkdir(parents=True, exist_ok=True)
    expected = len(bench.runs())
    missing = [f"{r.label} seed={r.seed}" for r in bench.runs() if not RunDir(r.run_dir).finished]
    text = report_text(bench, rows, analysis, runs)
    if missing:
        text += f"\nMissing {len(missing)} of {expected} runs: {', '.join(missing)}\n"
    write_atomic(out / "bench.md", text.encode())
    write_atomic(out / "bench.csv", csv_table(rows).encode())
    content = {
        "bench": bench.section.model_dump(), "config": bench.base, "source": bench.source,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "missing": missing, "runs": runs, "rows": rows, "analysis": analysis.to_dict(),
    }
    write_atomic(out / "bench.json", json.dumps(content, indent=2).encode())
    return content
