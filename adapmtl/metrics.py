"""ΔT, the paper's single number for a multitask model against its dense baseline.

    ΔT_t = Σ_{j ∈ metrics of t} (−1)^{l_j} · (M_{t,j} − M^b_{t,j}) / M^b_{t,j} · 100
    ΔT   = mean over tasks of ΔT_t

l_j = 1 for a lower-is-better metric. A SUM over a task's metrics, a MEAN over tasks,
in percent (AdapMTL, docs/method.md §4). Positive = better than the baseline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from adapmtl.errors import AdapMTLError

HIGHER_IS_BETTER: Mapping[str, bool] = MappingProxyType(
    {
        "miou": True,
        "pixel_acc": True,
        "angle_mean": False,
        "angle_median": False,
        "within_11_25": True,
        "within_22_5": True,
        "within_30": True,
        "abs_err": False,
        "rel_err": False,
        "delta_1_25": True,
        "delta_1_25_2": True,
        "delta_1_25_3": True,
        "cross_entropy": False,
        "cosine_similarity": True,
        "keypoint_err": False,
        "edge_err": False,
    }
)
"""Direction of every canonical metric name: True = higher is better."""

Results = Mapping[str, Mapping[str, float]]


class MetricError(AdapMTLError, ValueError):
    """Metric tables that cannot be compared (missing keys, unknown direction, zero baseline)."""


@dataclass(frozen=True)
class DeltaT:
    """ΔT in percent: `per_task` {task: ΔT_t} and `overall` (their mean)."""

    per_task: dict[str, float]
    overall: float


def delta_t(
    results: Results,
    baseline: Results,
    higher_is_better: Mapping[str, bool] | None = None,
) -> DeltaT:
    """ΔT of `results` against `baseline`, both {task: {metric: value}}, in percent.

    Directions come from `HIGHER_IS_BETTER`; `higher_is_better={name: bool}` adds
    directions for other metric names (and takes precedence). Both sides must hold the
    same tasks and, per task, the same metrics; baseline values must be finite and non-zero.
    Raises MetricError if the tables are not {task: {metric: value}}, their tasks or metrics
    differ, a metric's direction is unknown, a value is not a finite number, a baseline
    value is 0, or there is nothing to compare.
    """
    directions = {**HIGHER_IS_BETTER, **(higher_is_better or {})}
    for side, values in (("results", results), ("baseline", baseline)):
        if not isinstance(values, Mapping) or not all(isinstance(m, Mapping) for m in values.values()):
            raise MetricError(f"{side} must be {{task: {{metric: value}}}}, got {values!r}")
    _check_same_keys("tasks", results, baseline)
    unknown = sorted({m for metrics in baseline.values() for m in metrics if m not in directions})
    if unknown:
        raise MetricError(
            f"no direction known for metric(s) {unknown}; pass higher_is_better={{name: bool}} "
            f"(known: {sorted(HIGHER_IS_BETTER)})"
        )
    per_task = {}
    for task, base_metrics in baseline.items():
        _check_same_keys(f"metrics of task {task!r}", results[task], base_metrics)
        if not base_metrics:
            raise MetricError(f"task {task!r} has no metrics")
        total = 0.0
        for metric, base in base_metrics.items():
            value = _finite(results[task][metric], f"results[{task!r}][{metric!r}]")
            base = _finite(base, f"baseline[{task!r}][{metric!r}]")
            if base == 0:
                raise MetricError(f"baseline[{task!r}][{metric!r}] is 0: a relative change to it is undefined")
            sign = 1.0 if directions[metric] else -1.0
            total += sign * (value - base) / base * 100.0
        per_task[task] = total
    if not per_task:
        raise MetricError("no tasks to compare: results and baseline are empty")
    return DeltaT(per_task=per_task, overall=sum(per_task.values()) / len(per_task))


def _check_same_keys(what: str, results: Mapping, baseline: Mapping) -> None:
    only_results = sorted(set(results) - set(baseline))
    only_baseline = sorted(set(baseline) - set(results))
    if only_results or only_baseline:
        raise MetricError(
            f"{what} differ: only in results {only_results}, only in baseline {only_baseline}; "
            "both must hold the same ones"
        )


def _finite(value: object, where: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise MetricError(f"{where} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise MetricError(f"{where} must be finite, got {number}")
    return number


def run_delta_t(result: Mapping[str, Any], baseline: Mapping[str, Any], split: str = "test") -> "DeltaT":
    """ΔT of a finished run's result (its result.json content) against a baseline run's, on `split`.

    Raises MetricError when they were computed under different conventions (`convention` in
    result.json; runs written before the key existed are "corrected"): "paper" and "corrected"
    metrics measure different things (docs/conventions.md), so their ratio means nothing; and as
    `delta_t` does.
    """
    ours, theirs = result.get("convention", "corrected"), baseline.get("convention", "corrected")
    if ours != theirs:
        raise MetricError(f"the run's metrics follow the {ours!r} convention and the baseline's the {theirs!r} one: "
                          "they measure different things (docs/conventions.md)")
    return delta_t(result[split], baseline[split])
