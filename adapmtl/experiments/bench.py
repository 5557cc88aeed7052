"""`adapmtl bench`: methods × target sparsities × seeds through one engine, resumable.

A bench file is an ordinary run config (data, model, method, train: what every run
shares) plus a `bench` section:

    bench:
      methods: [adapmtl, snip, lth]     # dense is always added: it is the ΔT baseline
      targets: [0.5, 0.7, 0.9]
      seeds: [0, 1, 2]
      out_dir: runs/bench_synthetic
      convergence: 2          # dense also at 2 × train.steps per seed: has the reference converged?
      min_head_share: 0.7     # the heads must hold at least 70 % of the prunable weights
      max_noise_floor: 10     # dense models of different seeds must agree within 10 ΔT
      compare_to: adapmtl     # every method is also compared with this one, paired per seed
      jobs: 2                 # runs trained at once, one process each
      pretrain: {steps: 12000, lr_step: 4800}   # optional: every run starts from this dense model

With `pretrain`, one dense model is trained first (`out_dir/pretrain`, the shared config's seed, its
`train` keys replaced by those given) and every run, dense ones included, starts from it
(`train.init_from`): the methods then prune a trained model, as the paper's start from pretrained
backbones, and a short budget can still have a converged dense reference.

The shared `method:` section holds options for the methods that have them: each run takes
the keys its method declares (e.g. `update_every` reaches gmp and disparse_dynamic only);
a key that no benched method has is an error.

Every (method, target, seed) is a normal engine run in `out_dir/<method>/t<target>/seed<seed>`
(dense: `out_dir/dense/seed<seed>`; dense at `convergence` × the steps: `out_dir/dense_x<k>/seed<seed>`),
so `adapmtl eval` works on each. A run with a result.json is skipped; one with a checkpoint but no
result is resumed. The dense run of a seed is the ΔT baseline of that seed's runs. Once the dense runs
are done, each seed's dense model is evaluated on every other seed's test set (`out_dir/noise/`): the
noise floor. Then the sanity checks are printed (`adapmtl.experiments.stats`), the other runs train,
and figures go to bench.md, bench.csv and bench.json (`adapmtl.experiments.aggregate`).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adapmtl.engine.config import Config, ConfigError, apply_overrides, read_yaml, validate_config
from adapmtl.engine.run_eval import run_evaluator
from adapmtl.engine.rundir import RunDir
from adapmtl.engine.trainer import resume, train
from adapmtl.experiments.aggregate import BASELINE, analyse, component_numel, write_outputs
from adapmtl.files import write_atomic
from adapmtl.methods import METHODS, option_keys


class BenchSection(BaseModel):
    """The `bench` section of a bench file."""

    model_config = ConfigDict(extra="forbid")
    methods: list[str] = Field(min_length=1)
    targets: list[float] = Field(min_length=1)
    seeds: list[int] = Field([0], min_length=1)
    out_dir: str = "runs/bench"
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads for the runs; default: torch's")
    jobs: int = Field(1, ge=1, description="runs trained at once, each in its own process with `threads` "
                      "threads (e.g. 2 jobs of 1 thread on 2 cores); 1: one after another, in this process")
    convergence: Optional[float] = Field(
        2.0, gt=1, description="also train dense at this multiple of train.steps (and of the lr schedule) per "
        "seed; the dense reference has converged when both agree within the noise floor. null: no check")
    max_noise_floor: Optional[float] = Field(
        10.0, gt=0, description="largest noise floor (ΔT) at which the bench can rank methods: the paper's methods "
        "differ by a few to about ten ΔT points; a larger floor labels the table 'setting invalid'. null: not checked")
    min_head_share: Optional[float] = Field(
        0.7, ge=0, le=1, description="least share of the prunable weights the heads must hold (the paper's models: "
        "about 0.77); a smaller share labels the table 'setting invalid'. null: reported, not checked")
    pretrain: Optional[dict[str, Any]] = Field(
        None, description="train one dense model first (out_dir/pretrain: the shared config with these `train` keys "
        "replaced, e.g. {steps: 12000, lr_step: 4800}) and start every run from it (train.init_from); "
        "null: every run starts from the model's initialisation")

    @field_validator("pretrain")
    @classmethod
    def _pretrain_steps(cls, pretrain: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if pretrain is not None and not isinstance(pretrain.get("steps"), int):
            raise ValueError(f"the pretrain run needs its `steps` (an integer), e.g. {{steps: 12000}}; got {pretrain}")
        return pretrain

    compare_to: Optional[str] = Field(
        None, description="the method every other is compared with, paired per seed (win/loss/tie); "
        "default: adapmtl if benched, else the first method")

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

    @model_validator(mode="after")
    def _reference(self) -> "BenchSection":
        if self.compare_to is None:
            self.compare_to = "adapmtl" if "adapmtl" in self.methods else self.methods[0]
        elif self.compare_to not in self.methods:
            raise ValueError(f"compare_to {self.compare_to!r} is not among the benched methods {self.methods}")
        return self


# Step counts of `train` that scale with the budget, so that a longer run has the same schedule shape.
_SCALED_STEPS = ("steps", "lr_step", "log_every", "val_every", "checkpoint_every")


def _scaled_schedule(train: Any, factor: float) -> dict[str, int]:
    """The `_SCALED_STEPS` of `train` (a TrainConfig) times `factor`, each at least 1."""
    return {key: max(1, round(getattr(train, key) * factor)) for key in _SCALED_STEPS}


@dataclass(frozen=True)
class BenchRun:
    """One run of the bench: its method, target (0 for dense), seed and folder; `budget` multiplies
    train.steps and the lr schedule (1 for every run but the dense convergence check)."""

    method: str
    target: float
    seed: int
    run_dir: Path
    budget: float = 1.0

    @property
    def label(self) -> str:
        if self.method == BASELINE:
            return BASELINE if self.budget == 1 else f"{BASELINE} x{self.budget:g} steps"
        return f"{self.method} target={self.target:g}"


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
        """Dense first for every seed, then dense at the convergence budget, then every
        method × target × seed."""
        runs = [BenchRun(BASELINE, 0.0, s, self.out_dir / BASELINE / f"seed{s}") for s in self.section.seeds]
        if self.section.convergence is not None:
            k = self.section.convergence
            runs += [BenchRun(BASELINE, 0.0, s, self.out_dir / f"{BASELINE}_x{k:g}" / f"seed{s}", k)
                     for s in self.section.seeds]
        for method in self.section.methods:
            for target in self.section.targets:
                runs += [BenchRun(method, target, s, self.out_dir / method / f"t{target:g}" / f"seed{s}")
                         for s in self.section.seeds]
        return runs

    def config(self, run: BenchRun) -> Config:
        """The engine config of one run: the shared one with the run's method, target and seed.
        Raises ConfigError if that config is invalid (naming the run)."""
        raw = json.loads(json.dumps(self.base))
        pretrain = self.pretrain_run()
        where = f"{self.source} (run {run.label} seed={run.seed})"
        raw["train"] = dict(raw.get("train") or {})
        if pretrain is not None and run == pretrain:
            return self._pretrain_config(raw)
        if pretrain is not None:
            raw["train"]["init_from"] = str(pretrain.run_dir)
        accepted = option_keys(run.method)
        shared = {k: v for k, v in (raw.get("method") or {}).items() if k in accepted}
        raw["method"] = {**shared, "name": run.method, **({"target": run.target} if run.target else {})}
        raw["seed"] = run.seed
        raw["name"] = run.run_dir.name
        config = validate_config(raw, where)
        if run.budget == 1:
            return config
        raw["train"].update(_scaled_schedule(config.train, run.budget))
        return validate_config(raw, where)

    def _pretrain_config(self, raw: dict[str, Any]) -> Config:
        """The pretrain run's config: dense, the shared config's seed, its `train` keys replaced by
        `bench.pretrain`'s; the schedule's step counts it does not give (lr_step, log_every, ...)
        scale with its steps, so that its schedule has the shape of the shared one."""
        where = f"{self.source} (`bench.pretrain`, the dense run every run starts from)"
        raw["method"] = {"name": BASELINE}
        raw["name"] = "pretrain"
        shared = validate_config(raw, where).train
        given = self.section.pretrain
        raw["train"].update({**_scaled_schedule(shared, given["steps"] / shared.steps), **given})
        return validate_config(raw, where)

    def pretrain_run(self) -> Optional[BenchRun]:
        """The dense run every other run starts from (`bench.pretrain`), or None without one."""
        if self.section.pretrain is None:
            return None
        return BenchRun(BASELINE, 0.0, int(self.base.get("seed", 0)), self.out_dir / "pretrain")

    def dense_runs(self, budget: float = 1.0) -> dict[int, BenchRun]:
        """{seed: the dense run of that seed at `budget`}."""
        return {r.seed: r for r in self.runs() if r.method == BASELINE and r.budget == budget}

    def cross_file(self, model_seed: int, test_seed: int) -> Path:
        """Where the test metrics of seed `model_seed`'s dense model on seed `test_seed`'s test set go."""
        return self.out_dir / "noise" / f"dense_seed{model_seed}_on_test{test_seed}.json"


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
    if section.pretrain is not None and (raw.get("train") or {}).get("init_from"):
        raise ConfigError(f"{path}: `bench.pretrain` and `train.init_from` both say where the runs start; keep one")
    # A shared option reaches the methods that have it; one that no method has is a typo. (A preset's
    # options for methods left out by an override, e.g. bench.methods=[snip], are simply unused.)
    known = set(option_keys())
    foreign = sorted(set(raw.get("method") or {}) - known)
    if foreign:
        raise ConfigError(f"{path}: `method` option(s) {foreign} belong to no method")
    pretrain = bench.pretrain_run()
    started = []
    for run in bench.runs() + ([pretrain] if pretrain else []):
        config = bench.config(run)
        folder = RunDir(run.run_dir)
        if folder.finished or folder.last.is_file():  # never mix runs made with other settings into one table
            folder.require_same_config(config)
            started.append(run)
    if pretrain is not None and not RunDir(pretrain.run_dir).finished and set(started) - {pretrain}:
        raise ConfigError(f"{path}: runs in {bench.out_dir} started from a pretrained model that is no longer in "
                          f"{pretrain.run_dir} (missing or unfinished); a new one would mix two starting points in "
                          f"one table: delete the whole {bench.out_dir}, or use another bench.out_dir")
    return bench


def cross_evaluate(bench: Bench, echo: Callable[[str], None] = partial(print, flush=True)) -> int:
    """Evaluate every finished dense model (at the bench's budget) on every other seed's test set,
    for the noise floor; results go to `bench.cross_file(...)` as {"test": metrics, "convention": ...}, and files
    already there are kept. Returns how many evaluations ran. Raises RunDirError or
    CheckpointError for a damaged dense run, OSError if the file cannot be written."""
    dense = {s: r for s, r in bench.dense_runs().items() if RunDir(r.run_dir).finished}
    done = 0
    for test_seed, test_run in dense.items():
        todo = [s for s in dense if s != test_seed and not bench.cross_file(s, test_seed).is_file()]
        if not todo:
            continue
        _, _, run_on_test = run_evaluator(test_run.run_dir, "test")  # one test set, rendered once
        for model_seed in todo:
            model, _ = RunDir(dense[model_seed].run_dir).load_model()
            metrics, _ = run_on_test(model)
            path = bench.cross_file(model_seed, test_seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            convention = RunDir(test_run.run_dir).config().convention  # evaluated as the test run was
            write_atomic(path, json.dumps({"test": metrics, "convention": convention}, indent=2).encode())
            echo(f"noise floor: dense seed={model_seed} evaluated on the test set of seed={test_seed}")
            done += 1
    return done


def sanity_lines(bench: Bench) -> list[str]:
    """The sanity checks as they stand (one line each, then the verdict on the setting), for the
    console. Raises RunDirError if a finished run's files are damaged."""
    analysis = analyse(bench)
    return [f"check: {c.name}: {c.value} [{c.status}]" for c in analysis.checks] + [analysis.label]


PARENT_POLL_SECONDS = 2.0


def _exit_with_parent(parent: int) -> None:
    """In a worker: end this process within PARENT_POLL_SECONDS once the bench process `parent` is
    gone (killed, say), instead of training on as an orphan; a run it leaves is resumed by the
    next `adapmtl bench`."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _train_run(bench: Bench, run: BenchRun) -> float:
    """Train or resume one run (in this process or a worker's); returns its seconds."""
    if bench.section.threads:
        torch.set_num_threads(bench.section.threads)
    t0 = time.perf_counter()
    _train_or_resume(bench, run)
    return time.perf_counter() - t0


def _train_or_resume(bench: Bench, run: BenchRun) -> None:
    """Resume `run` from its last checkpoint, or train it from the start."""
    if RunDir(run.run_dir).last.is_file():
        resume(run.run_dir)
    else:
        train(bench.config(run), run.run_dir)


def _run_all(bench: Bench, numbered: list[tuple[int, BenchRun]], pool: Optional[ProcessPoolExecutor],
             echo: Callable[[str], None], started: float) -> None:
    """Train the unfinished runs of `numbered` ((position, run) pairs): in this process when `pool`
    is None, else all at once in `pool`; returns when all are done, or raises the first error
    after cancelling the runs not yet started."""
    total = len(bench.runs())
    futures: dict[Future, str] = {}
    for i, run in numbered:
        where = f"run {i}/{total}: {run.label} seed={run.seed}"
        if RunDir(run.run_dir).finished:
            echo(f"{where}: finished, skipped")
            continue
        doing = f"{'resuming' if RunDir(run.run_dir).last.is_file() else 'training into'} {run.run_dir}"
        echo(f"{where}: {doing if pool is None else 'queued for ' + doing}")
        if pool is None:
            seconds = _train_run(bench, run)
            echo(f"{where}: done in {seconds:.0f} s (bench {time.perf_counter() - started:.0f} s)")
        else:
            futures[pool.submit(_train_run, bench, run)] = where
    try:
        for future in as_completed(futures):
            echo(f"{futures[future]}: done in {future.result():.0f} s (bench {time.perf_counter() - started:.0f} s)")
    except BaseException:
        for future in futures:
            future.cancel()
        raise


def _run_pretrain(bench: Bench, run: BenchRun, echo: Callable[[str], None], started: float) -> None:
    """Train (or resume, or skip when finished) the dense model every run starts from, in this process
    with all of torch's threads: nothing else can run before it."""
    if RunDir(run.run_dir).finished:
        echo(f"pretrain: {run.run_dir} finished, skipped")
        return
    echo(f"pretrain: {'resuming' if RunDir(run.run_dir).last.is_file() else 'training into'} {run.run_dir}")
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, os.cpu_count() or 1))
    try:
        t0 = time.perf_counter()
        _train_or_resume(bench, run)
    finally:
        torch.set_num_threads(threads)
    echo(f"pretrain: done in {time.perf_counter() - t0:.0f} s (bench {time.perf_counter() - started:.0f} s)")


def run_bench(bench: Bench, echo: Callable[[str], None] = partial(print, flush=True)) -> dict[str, Any]:
    """Run every missing run of `bench` (finished ones are skipped, interrupted ones resumed),
    `bench.section.jobs` at a time, then write bench.md, bench.csv and bench.json to its out_dir;
    returns the JSON content (see `write_outputs`). `echo` gets the heads' share of the weights
    first, progress lines per run, and the sanity checks once the dense runs are done (the noise
    floor's cross-evaluations run then), before the other runs start. Errors of a run (a bad
    dataset, a non-finite loss, ...) propagate as `train` raises them; the finished runs stay
    finished, and with several jobs the runs not yet started are not started."""
    runs = bench.runs()
    if bench.section.threads:
        torch.set_num_threads(bench.section.threads)
    numel = component_numel(bench.config(runs[0]))
    share = 1 - numel.get("backbone", 0) / sum(numel.values())
    minimum = bench.section.min_head_share
    echo(f"heads hold {100 * share:.1f} % of the {sum(numel.values()):,} prunable weights"
         + ("" if minimum is None or share >= minimum else
            f": under the required {100 * minimum:g} %, the table will read 'setting invalid'"))
    started = time.perf_counter()
    numbered = list(enumerate(runs, 1))
    pool = None
    if bench.section.jobs > 1:  # spawn: a fresh interpreter per worker, not a fork of torch's threads
        pool = ProcessPoolExecutor(bench.section.jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_exit_with_parent, initargs=(os.getpid(),))
    try:
        pretrain = bench.pretrain_run()
        if pretrain is not None:  # every other run starts from it, so it trains alone (with every thread)
            _run_pretrain(bench, pretrain, echo, started)
        _run_all(bench, [(i, r) for i, r in numbered if r.method == BASELINE], pool, echo, started)
        cross_evaluate(bench, echo)  # the setting can be judged before the long part of the bench
        for line in sanity_lines(bench):
            echo(line)
        _run_all(bench, [(i, r) for i, r in numbered if r.method != BASELINE], pool, echo, started)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return write_outputs(bench)
