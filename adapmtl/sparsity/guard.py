"""The collapse guard: no prunable layer loses all its weights unless the user allows it.

One threshold per component (or for the whole model) prunes by magnitude across layers of very
different scales. With PyTorch's default init, a head's first conv (fan-in 512·9) has |w| < 0.015
while a backbone stem reaches 0.19: one common shift to 80 % zeroed such layers whole, and their
outputs no longer depended on the input. The guard keeps, in every prunable layer of n weights,
its keep_count(n, min_density) = max(1, ⌈min_density · n⌉) largest-magnitude weights: layer l
uses the threshold min(τ_group, cap_l), where cap_l is its (k+1)-th largest |w|. The caps are
recomputed from the current weights at every controller measurement and by `finalize`; the
controller's shift and `finalize(target)` count only the weights the guard lets go
(`adapmtl.sparsity.shift`). min_density = 0 switches the guard off (collapse allowed). The mask
methods keep the same floor (`adapmtl.methods.masks`). This is our addition to the method
(docs/method.md §2); AdapMTL (Xiang et al., ACM MM 2024) has no such guard.
"""
from __future__ import annotations

import math

import torch

from adapmtl.errors import SparsifyError

DEFAULT_MIN_DENSITY = 0.01
"""Share of each layer's weights that always survive: 1 %, and at least one weight."""


def check_min_density(min_density: float) -> float:
    """`min_density` as a float, or SparsifyError unless it is a number in [0, 1].

    Raises SparsifyError otherwise.
    """
    if not isinstance(min_density, (int, float)) or not 0.0 <= min_density <= 1.0:
        raise SparsifyError(f"min_density must be a share of each layer's weights in [0, 1] (0: no collapse guard), "
                            f"got {min_density!r}")
    return float(min_density)


def keep_count(numel: int, min_density: float) -> int:
    """How many of a layer's `numel` weights the guard keeps: 0 when min_density is 0, else
    max(1, ⌈min_density · numel⌉), at most numel."""
    if min_density <= 0:
        return 0
    return min(int(numel), max(1, math.ceil(min_density * numel)))


def max_sparsity(numels: list[int], min_density: float) -> float:
    """The highest overall sparsity the guard allows over layers of `numels` weights."""
    total = sum(numels)
    return sum(n - keep_count(n, min_density) for n in numels) / total


@torch.no_grad()
def layer_cap(weight: torch.Tensor, min_density: float) -> torch.Tensor:
    """The guard's cap of one layer (a 0-dim tensor on the weight's device, its dtype): the (k+1)-th
    largest |w| for k = keep_count(numel, min_density), so that |w| > cap holds for the k largest;
    +inf when min_density is 0 (no guard), 0 when k is every weight."""
    magnitude = weight.detach().abs().flatten()
    k = keep_count(magnitude.numel(), min_density)
    if k == 0:
        return magnitude.new_tensor(float("inf"))
    if k >= magnitude.numel():
        return magnitude.new_tensor(0.0)
    return magnitude.topk(k + 1).values[-1]  # one selection, no host sync
