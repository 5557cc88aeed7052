"""Dense vs compiled forward time, measured side by side, and the same for a finished run."""
from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from adapmtl.inference.compile import InferenceError, Plan, SparseCompiled, compile_sparse
from adapmtl.inference.timing import elapsed_seconds
from adapmtl.inference.work import Work


@dataclass
class SpeedComparison:
    """Seconds per forward of each round; rounds alternate dense and compiled, so a slow
    moment of a shared machine hits both. `speedup`: the median of the per-round ratios."""

    dense_s: list[float] = field(default_factory=list)
    compiled_s: list[float] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        """Median of dense / compiled time over the rounds."""
        return statistics.median(d / c for d, c in zip(self.dense_s, self.compiled_s))

    def summary(self) -> str:
        """One line: median times and the speedup."""
        return (f"dense {1000 * statistics.median(self.dense_s):.1f} ms, compiled "
                f"{1000 * statistics.median(self.compiled_s):.1f} ms: {self.speedup:.2f}x "
                f"(medians of {len(self.dense_s)} alternating rounds; the speedup is the median of the rounds' "
                "dense/compiled ratios, so on a busy machine it can differ from the ratio of the two medians)")


@torch.no_grad()
def time_alternating(contenders: Mapping[str, Callable[[torch.Tensor], Any]], example_input: torch.Tensor,
                     rounds: int = 5, pause_s: float = 0.0) -> dict[str, list[float]]:
    """Seconds of one call of each contender on `example_input`, {name: [one per round]}: every
    round calls each contender once, so a slow moment of a shared machine hits all of them; one
    warm-up call each first, in the given order. The rounds then run in shuffled orders (seeded, so
    repeatable), so that no contender always runs right after the same one: what a call leaves behind
    (caches filled with its own data, a pool's threads still spinning) falls on each in turn. (A
    rotation would not do: each contender would still follow its neighbour in most rounds.)
    `pause_s` (seconds, untimed) between calls lets the threads of the previous contender's pool
    (OpenMP, ONNX Runtime and OpenVINO spin a while after a call) go idle before the next is timed.

    Raises ValueError if `rounds` < 1 or there are no contenders."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if not contenders:
        raise ValueError("time_alternating needs at least one contender, got none")
    for run in contenders.values():
        run(example_input)
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    order = random.Random(0)
    for _ in range(rounds):
        for name in order.sample(names, len(names)):
            if pause_s:
                time.sleep(pause_s)
            times[name].append(elapsed_seconds(lambda: contenders[name](example_input)))
    return times


def compare_speed(model: nn.Module, compiled: nn.Module, example_input: torch.Tensor, rounds: int = 5) -> SpeedComparison:
    """Time `model` and `compiled` on `example_input` in `rounds` alternating rounds (after a warm-up).

    Raises ValueError if `rounds` < 1."""
    times = time_alternating({"dense": model, "compiled": compiled}, example_input, rounds)
    return SpeedComparison(times["dense"], times["compiled"])


def slowest_layers(plan: Plan, count: int, work: Mapping[str, Work] | None = None) -> str:
    """The `count` layers whose chosen path takes longest, with every path's time: where the time goes.
    With `work` ({layer name: Work} on the plan's example input, `model_work`), each line also gives the
    chosen path's useful rate (GFLOP/s, 2 per useful multiply-add). Layers that were not timed (not called
    as modules on the example input, e.g. a Linear whose weight a custom module reads directly, or one no
    input reaches; they stay dense) are counted."""
    layers = sorted(((n, c) for n, c in plan.layers.items() if c.times_ms), key=lambda item: -item[1].times_ms[item[1].path])
    total = sum(choice.times_ms[choice.path] for _, choice in layers)
    untimed = len(plan.layers) - len(layers)
    lines = [f"layers' own time {total:.1f} ms; slowest {min(count, len(layers))}:"
             + (f" ({untimed} layer(s) not called as modules, not timed, left dense)" if untimed else "")]
    for name, choice in layers[:count]:
        times = ", ".join(f"{path} {ms:.2f}" for path, ms in choice.times_ms.items())
        rate = (f", {2 * work[name].useful / choice.times_ms[choice.path] / 1e6:.0f} GFLOP/s useful"
                if work and name in work else "")
        lines.append(f"  {name:<42} {choice.sparsity:>6.1%} {choice.path:<6} ({times} ms{rate})")
    return "\n".join(lines)


def plan_path(run_dir: str | Path, plan_out: str | Path | None = None) -> Path:
    """Where `compile_run` saves the plan: `plan_out`, else RUN_DIR/export/plan.json."""
    from adapmtl.engine.rundir import RunDir

    return Path(plan_out) if plan_out else RunDir(run_dir).plan_file


def compile_run(run_dir: str | Path, *, batch: int = 1, size: Sequence[int] | None = None, rounds: int = 5,
                plan_out: str | Path | None = None) -> tuple[SparseCompiled, SpeedComparison, Path]:
    """Compile a finished run's finalized model for a batch of `batch` images of `size` (H, W;
    default the run's evaluation size), time it against the dense model, save the plan
    (default RUN_DIR/export/plan.json) and return (compiled, comparison, plan path).

    Raises InferenceError if `batch` < 1 or compiling fails (see `compile_sparse`); RunDirError
    (or ModelError, ConfigError, CheckpointError) if the run is not finished or its files are
    damaged; ValueError if `rounds` < 1; OSError if the plan cannot be written."""
    from adapmtl.engine.rundir import RunDir
    from adapmtl.export import default_input_size

    if batch < 1:
        raise InferenceError(f"batch must be at least 1, got {batch}")
    model, spec = RunDir(run_dir).load_model()
    height, width = size or default_input_size(run_dir)
    example = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    compiled = compile_sparse(model, example)
    comparison = compare_speed(model, compiled, example, rounds)
    path = plan_path(run_dir, plan_out)
    compiled.plan.save(path)
    return compiled, comparison, path
