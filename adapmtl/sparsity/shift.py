"""The common threshold shift that gives an exact number of zeros.

Moving every threshold score by the same δ (in logit space) keeps the learned
allocation: for the small thresholds of practice, τ ≈ e^s, so a common δ scales every
group's τ by the same factor e^δ and their ratios stay as learned. For each weight w
of group g, its *critical shift* δ_w = logit(|w|) − s_g is the δ at which it becomes
zero (|w| ≤ sigmoid(s_g + δ)). Exactly K zeros are had for any δ between the K-th and
(K+1)-th smallest critical shifts: one selection (kthvalue) and one masked minimum.
A weight above its layer's collapse-guard cap (`adapmtl.sparsity.guard`) is never pruned by
any shift: its critical shift is +inf.
"""
from __future__ import annotations

import torch

from adapmtl.sparsity.bank import ThresholdBank
from adapmtl.sparsity.sparsify import SparseLayer


def critical_shifts(layers: list[SparseLayer], bank: ThresholdBank, dtype: torch.dtype) -> torch.Tensor:
    """δ_w of every prunable weight, flattened, in `dtype`: −inf for w = 0, +inf for |w| ≥ 1
    and for weights the collapse guard keeps (above their layer's cap)."""
    scores = bank.scores.detach().to(dtype)
    parts = []
    for layer in layers:
        magnitude = layer.dense_weight.detach().abs().to(dtype).flatten()
        # logit(|w|); log(0) = -inf prunes exact zeros first; |w| >= 1 cannot be pruned
        logit = torch.log(magnitude) - torch.log1p(-magnitude.clamp(max=1.0))
        shift = logit - scores[layer.parametrization.group]
        kept = magnitude > bank.caps[layer.parametrization.layer].to(dtype)
        parts.append(shift.masked_fill(kept, float("inf")))
    return torch.cat(parts)


def shift_for_zeros(layers: list[SparseLayer], bank: ThresholdBank, zeros: int, dtype=torch.float64) -> float:
    """The common δ that makes exactly `zeros` prunable weights zero (see module doc).

    When that is out of reach (tied magnitudes, exact zeros, or weights with |w| ≥ 1
    that no threshold below 1 removes) it gives the nearest reachable count.
    float64 makes the count exact to the weight; float32 is enough for steering.
    """
    shifts = critical_shifts(layers, bank, dtype)
    n = shifts.numel()
    zeros = min(max(int(zeros), 0), n)
    below = shifts.kthvalue(zeros).values if zeros > 0 else None
    above = None
    if zeros < n:  # the next larger critical shift: a masked min is 3x cheaper than a second selection
        rest = shifts if below is None else shifts[shifts > below]
        above = rest.min() if rest.numel() else None
    return _between(below, above)


def _between(below: torch.Tensor | None, above: torch.Tensor | None) -> float:
    """A finite δ with below ≤ δ < above, as far from both as possible."""
    lo = None if below is None or not torch.isfinite(below) else float(below)
    hi = None if above is None or not torch.isfinite(above) else float(above)
    if lo is not None and hi is not None:
        return lo + (hi - lo) / 2 if hi > lo else lo
    if lo is not None:
        return lo + 1.0  # nothing above: all weights, or the rest are |w| >= 1
    if hi is not None:
        return hi - 1.0  # below absent (zeros = 0) or -inf (only exact zeros below)
    return 0.0


@torch.no_grad()
def global_allocation(layers: list[SparseLayer], bank: ThresholdBank, zeros: int) -> dict[str, float]:
    """{component: sparsity} that one threshold over every prunable |w| gives at `zeros` zeros
    overall, with the same collapse guard: the allocation without learned thresholds (the paper's
    ablation, AdapMTL (Xiang et al., ACM MM 2024) Table 4), to set a learned allocation against.
    Tied magnitudes at the threshold may add a few zeros. Components in layer order.
    """
    parts = []
    for layer in layers:
        magnitude = layer.dense_weight.detach().abs().flatten().float()
        parts.append(magnitude.masked_fill(magnitude > bank.caps[layer.parametrization.layer].float(), float("inf")))
    flat = torch.cat(parts)
    zeros = min(max(int(zeros), 0), flat.numel())
    threshold = flat.kthvalue(zeros).values if zeros > 0 else flat.new_tensor(-1.0)
    counts = torch.stack([(part <= threshold).sum() for part in parts]).tolist()
    numel: dict[str, int] = {}
    pruned: dict[str, int] = {}
    for layer, part, count in zip(layers, parts, counts):
        component = layer.parametrization.component
        numel[component] = numel.get(component, 0) + part.numel()
        pruned[component] = pruned.get(component, 0) + int(count)
    return {c: pruned[c] / numel[c] for c in numel}
