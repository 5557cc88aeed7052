"""The statistics of a bench, on plain numbers: 95 % intervals over seeds, the noise floor, the
win / loss / tie rule and the sanity checks that decide whether a bench's setting can rank methods.

Every figure here is a ΔT in % (see `adapmtl.metrics.delta_t`), paired per seed: a method's run of
seed s is compared with the dense run of seed s, two methods with each other seed by seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Optional, Sequence

# Two-sided 95 % quantiles of Student's t (t_{0.975, df}), from standard tables. A df between two
# entries takes the lower df's quantile, the larger one: the interval errs on the wide side.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
         18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060,
         26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
_Z975 = 1.960  # the limit for df → ∞


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the factor of the standard error in a two-sided 95 % interval.

    Raises ValueError if df < 1."""
    if df < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom (2 values), got df={df}")
    if df in _T975:
        return _T975[df]
    below = [d for d in _T975 if d < df]
    return _T975[max(below)] if df <= max(_T975) else _Z975


@dataclass(frozen=True)
class Interval:
    """Mean of `n` paired values and its two-sided 95 % t interval [low, high]; with one value the
    interval is unknown (low = high = None)."""

    mean: float
    low: Optional[float]
    high: Optional[float]
    n: int

    def contains_zero(self) -> bool:
        """True when 0 lies in [low, high] (an unknown interval counts as containing it)."""
        return self.low is None or self.high is None or self.low <= 0.0 <= self.high

    def text(self, digits: int = 2) -> str:
        """"+1.23 [-0.50, +2.96]" (signed, as ΔT), or "+1.23 [n = 1]" without an interval."""
        if self.low is None or self.high is None:
            return f"{self.mean:+.{digits}f} [n = {self.n}]"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean ± t_{0.975, n-1} · s / √n over `values` (s: the sample standard deviation).

    Raises ValueError if `values` is empty or holds a non-finite number."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("an interval needs at least one value")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"values must be finite, got {values}")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, None, None, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_differences(a: Mapping[int, float], b: Mapping[int, float]) -> dict[int, float]:
    """{seed: a[seed] − b[seed]} over the seeds both hold."""
    return {seed: a[seed] - b[seed] for seed in a if seed in b}


def noise_floor(cross: Iterable[float]) -> Optional[float]:
    """The root mean square of ΔT between equally good models: `cross` holds, for each ordered pair
    of seeds i ≠ j, the ΔT of seed j's dense model against seed i's, both on seed i's test set.
    It is the typical size of a difference that means nothing; None when `cross` is empty."""
    values = [float(v) for v in cross]
    if not values:
        return None
    return math.sqrt(sum(v * v for v in values) / len(values))


Verdict = Literal["win", "loss", "tie"]


def verdict(difference: Interval, floor: Optional[float]) -> Optional[Verdict]:
    """"win" if the paired difference is positive, "loss" if negative, "tie" when it may be noise:
    its |mean| is within the noise floor or its 95 % interval contains 0. None when it cannot be
    told: one seed (no interval) or no noise floor."""
    if floor is None or difference.low is None:
        return None
    if abs(difference.mean) <= floor or difference.contains_zero():
        return "tie"
    return "win" if difference.mean > 0 else "loss"


Status = Literal["pass", "fail", "not checked"]


@dataclass(frozen=True)
class Check:
    """One sanity check of the setting: what was measured, the rule, and the outcome; `problem`
    says in a few words what a failure (or a missing check) means for the table."""

    name: str
    value: str
    rule: str
    status: Status
    problem: str = ""


def check_heads_share(numel: Mapping[str, int], minimum: Optional[float]) -> Check:
    """Heads' share of the prunable weights (`numel`: {component: weights}; every component but
    "backbone" is a head) against `minimum` (a fraction; None: reported, not checked)."""
    total = sum(numel.values())
    heads = total - numel.get("backbone", 0)
    share = heads / total if total else 0.0
    value = f"{100 * share:.1f} % ({heads:,} of {total:,} weights; backbone {numel.get('backbone', 0):,})"
    if minimum is None:
        return Check("heads' share of prunable weights", value, "not required", "not checked")
    ok = share >= minimum
    return Check("heads' share of prunable weights", value, f"≥ {100 * minimum:g} % (the paper's models: about 77 %)",
                 "pass" if ok else "fail",
                 "" if ok else f"the heads hold {100 * share:.1f} % of the weights, under {100 * minimum:g} %")


def check_noise_floor(floor: Optional[float], pairs: int, maximum: Optional[float] = None) -> Check:
    """The noise floor is measured (from `pairs` cross-evaluated dense pairs) and at most `maximum`
    ΔT. A larger floor makes every difference a tie, and lets an under-trained reference pass the
    convergence check (its seeds disagree as much as its budgets do)."""
    rule = "RMS over seed pairs i ≠ j of ΔT(dense j vs dense i, on i's test set)" + (
        f", at most {maximum:g}" if maximum is not None else "")
    if floor is None:
        return Check("noise floor", "not measured", rule, "not checked",
                     "no noise floor: it needs the dense runs of at least 2 seeds")
    ok = maximum is None or floor <= maximum
    return Check("noise floor", f"{floor:.2f} ΔT ({pairs} pairs)", rule, "pass" if ok else "fail",
                 "" if ok else f"the noise floor {floor:.2f} ΔT exceeds {maximum:g}: the dense models of different "
                               "seeds disagree too much to rank methods (train longer)")


def check_convergence(difference: Optional[Interval], floor: Optional[float], multiple: Optional[float]) -> Check:
    """Dense at `multiple` × the budget against dense at the budget, paired per seed: it passes
    when |mean ΔT| ≤ the noise floor, i.e. more training does not change the reference beyond noise.
    `multiple` None: the bench trains no such runs (not checked)."""
    rule = "mean within ± noise floor"
    if multiple is None:
        return Check("dense reference converged", "not run", rule, "not checked",
                     "the dense reference's convergence is not checked (bench.convergence: null)")
    name = f"dense reference converged ({multiple:g}× steps vs 1×)"
    if difference is None or floor is None:
        return Check(name, "n/a" if difference is None else difference.text(), rule, "not checked",
                     "the dense reference's convergence is not checked")
    ok = abs(difference.mean) <= floor
    return Check(name, difference.text(), rule, "pass" if ok else "fail",
                 "" if ok else f"the dense reference has not converged: {multiple:g}× the steps change its ΔT by "
                               f"{difference.mean:+.2f}, beyond the noise floor {floor:.2f}")


def check_random_worse(difference: Optional[Interval], floor: Optional[float], target: float) -> Check:
    """`random` at `target` must be clearly worse than dense: its ΔT interval lies entirely below
    −noise floor. Otherwise the bench cannot tell a pruning method from chance."""
    name = f"random at {target:g} clearly worse than dense"
    rule = "95 % interval entirely below −noise floor"
    if difference is None or floor is None or difference.high is None:
        return Check(name, "n/a" if difference is None else difference.text(), rule, "not checked",
                     f"not checked whether random pruning at {target:g} is worse than dense")
    ok = difference.high < -floor
    return Check(name, difference.text(), rule, "pass" if ok else "fail",
                 "" if ok else f"random at {target:g} is not clearly worse than dense (ΔT {difference.text()}, "
                               f"noise floor {floor:.2f}): the task does not punish bad pruning")


def setting_label(checks: Sequence[Check]) -> str:
    """The heading's verdict on the setting: "setting invalid: ..." if a check failed, "setting
    not fully checked: ..." if one could not run, else "setting valid: every sanity check passes"."""
    failed = [c.problem for c in checks if c.status == "fail"]
    if failed:
        return "setting invalid: " + "; ".join(failed)
    unchecked = [c.problem for c in checks if c.status == "not checked" and c.problem]
    if unchecked:
        return "setting not fully checked: " + "; ".join(unchecked)
    return "setting valid: every sanity check passes"
