"""Erdős–Rényi-Kernel (ERK) layer densities, as RigL (Evci et al., ICML 2020) and DiSparse use them.

A weight tensor of shape (d_1, …, d_k) with n = d_1·…·d_k entries gets the raw density
r = ((d_1 + … + d_k) / n) ** power_scale (for a Conv2d [out, in, kh, kw]: (out + in + kh + kw) /
(out·in·kh·kw); power_scale 1 is RigL's ERK, DiSparse's `googleAI_ERK` uses 0.9). Every tensor keeps
ε·r·n weights, one ε for all, chosen so that the model keeps its overall density; a tensor whose ε·r
would exceed 1 is kept dense and ε is solved again over the others (official code:
DiSparse-Multitask-Model-Compression, dynamic_prune.py, `googleAI_ERK`, lines 80-191).

That iteration's fixed point is the unique ε with Σ clamp(ε·r_l·n_l, 0, n_l) = kept (the count is
continuous and non-decreasing in ε), which is what `erk_counts` solves (by bisection), with one
addition of ours: a lower bound per tensor (the collapse guard, `adapmtl.sparsity.guard`), kept as
the upper bound n_l is. The real counts are then rounded to integers that sum exactly to `kept`
(largest remainders first, ties to the earlier tensor), so the overall sparsity is exact.
"""
from __future__ import annotations

import math
from typing import Sequence

from adapmtl.methods.base import MethodError

DISPARSE_POWER_SCALE = 0.9
"""`erk_power_scale` of DiSparse's `googleAI_ERK` (dynamic_prune.py line 80); RigL's ERK uses 1.0."""


def erk_raw(shape: Sequence[int], power_scale: float = DISPARSE_POWER_SCALE) -> float:
    """The raw ERK density of a tensor of `shape`: (sum of its dimensions / its entries) ** power_scale.

    Raises MethodError for an empty shape or one with a zero dimension.
    """
    n = math.prod(shape)
    if not shape or n == 0:
        raise MethodError(f"ERK needs a non-empty weight tensor, got shape {tuple(shape)}")
    return (sum(shape) / n) ** power_scale


def _solve(raw: list[float], numel: list[int], low: list[float], kept: float) -> list[float]:
    """The real counts clamp(ε·raw_l·numel_l, low_l, numel_l) that sum to `kept` (bisection on ε)."""
    def counts(eps: float) -> list[float]:
        return [min(float(n), max(lo, eps * r * n)) for r, n, lo in zip(raw, numel, low)]

    lo_eps, hi_eps = 0.0, 1.0 / min(raw)  # at hi every tensor is dense
    for _ in range(200):
        mid = 0.5 * (lo_eps + hi_eps)
        if sum(counts(mid)) < kept:
            lo_eps = mid
        else:
            hi_eps = mid
    return counts(hi_eps)


def erk_densities(shapes: Sequence[Sequence[int]], density: float,
                  power_scale: float = DISPARSE_POWER_SCALE) -> list[float]:
    """Per-tensor ERK densities (fractions in [0, 1], one per shape, in order) for an overall `density`:
    Σ d_l·n_l = density·Σ n_l, d_l = min(1, ε·r_l) (the module doc; `googleAI_ERK`'s density_dict).

    Raises MethodError unless 0 <= density <= 1, or for an empty shape.
    """
    if not 0.0 <= density <= 1.0:
        raise MethodError(f"ERK density must lie in [0, 1], got {density!r}")
    raw = [erk_raw(s, power_scale) for s in shapes]
    numel = [math.prod(s) for s in shapes]
    counts = _solve(raw, numel, [0.0] * len(shapes), density * sum(numel))
    return [c / n for c, n in zip(counts, numel)]


def erk_counts(shapes: Sequence[Sequence[int]], kept: int, minimum: Sequence[int] | None = None,
               power_scale: float = DISPARSE_POWER_SCALE) -> list[int]:
    """Per-tensor numbers of kept weights (integers, one per shape, in order) summing exactly to `kept`:
    the ERK counts, at least `minimum[l]` (the collapse guard's keep_count; default 0) and at most n_l.

    Raises MethodError when `kept` is below the minimums' sum or above the total number of weights.
    """
    numel = [math.prod(s) for s in shapes]
    low = [0] * len(shapes) if minimum is None else [int(m) for m in minimum]
    if not sum(low) <= kept <= sum(numel):
        raise MethodError(f"cannot keep {kept} weights in ERK layers of {sum(numel)} weights with "
                          f"{sum(low)} kept by the collapse guard (lower the target or method.min_density)")
    real = _solve([erk_raw(s, power_scale) for s in shapes], numel, [float(x) for x in low], float(kept))
    counts = [min(n, max(lo, math.floor(c + 1e-9))) for c, n, lo in zip(real, numel, low)]
    remainders = sorted(range(len(shapes)), key=lambda i: (-(real[i] - counts[i]), i))
    short = kept - sum(counts)
    for i in remainders:  # largest remainders first; the count stays within [low, numel]
        if short <= 0:
            break
        if counts[i] < numel[i]:
            counts[i] += 1
            short -= 1
    for i in reversed(remainders):  # bisection left a count over (never by more than rounding)
        if short >= 0:
            break
        if counts[i] > low[i]:
            counts[i] -= 1
            short += 1
    return counts
