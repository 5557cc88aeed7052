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
seed is the ΔT baseline of that seed's runs; figures are then averaged over seeds and written
as bench.md, bench.csv and bench.json (`adapmtl.experiments.aggregate`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapmtl.engine.config import Config, ConfigError, apply_overrides, read_yaml, validate_config
from adapmtl.engine.rundir import RunDir
from adapmtl.engine.trainer import resume, train
from adapmtl.experiments.aggregate import BASELINE, write_outputs
from adapmtl.methods import METHODS


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

    def config(self, run: BenchRun) -> Config:
        """The engine config of one run: the shared one with the run's method, target and seed.
        Raises ConfigError if that config is invalid (naming the run)."""
        raw = json.loads(json.dumps(self.base))
        accepted = METHODS[run.method].options_type.model_fields
        shared = {k: v for k, v in (raw.get("method") or {}).items() if k in accepted}
        raw["method"] = {**shared, "name": run.method, **({"target": run.target} if run.target else {})}
        raw["seed"] = run.seed
        raw["name"] = run.run_dir.name
        return validate_config(raw, f"{self.source} (run {run.label} seed={run.seed})")


def load_bench(path: str | Path, overrides: Sequence[str] = ()) -> Bench:
    """Read a bench file (a path or a preset name such as `bench_synthetic`) with key=value
    overrides (`bench.seeds=[0]`, `train.steps=100`); every run's config is validated now.

    Raises ConfigError if the file is missing or has no `bench` section, a key of it is invalid
    (unknown method, a target outside (0, 1), ...), a `method` option belongs to no benched
    method, or a run's config is invalid; the message names the file and the key.
    """
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
    then write bench.md, bench.csv and bench.json to its out_dir; returns the JSON content
    (see `write_outputs`). `echo` gets one progress line per run. Errors of a run (a bad dataset,
    a non-finite loss, ...) propagate as `train` raises them; the finished runs stay finished."""
    runs = bench.runs()
    if bench.section.threads:
        torch.set_num_threads(bench.section.threads)
    started = time.perf_counter()
    for i, run in enumerate(runs, 1):
        where = f"run {i}/{len(runs)}: {run.method}" + (f" target={run.target:g}" if run.target else "") + f" seed={run.seed}"
        folder = RunDir(run.run_dir)
        if folder.finished:
            echo(f"{where}: finished, skipped")
            continue
        t0 = time.perf_counter()
        if folder.last.is_file():
            echo(f"{where}: resuming {run.run_dir}")
            resume(run.run_dir)
        else:
            echo(f"{where}: training into {run.run_dir}")
            train(bench.config(run), run.run_dir)
        echo(f"{where}: done in {time.perf_counter() - t0:.0f} s (bench {time.perf_counter() - started:.0f} s)")
    return write_outputs(bench)
