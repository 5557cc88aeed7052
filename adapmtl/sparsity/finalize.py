"""`finalize`: bake the zeros into ordinary weights, optionally trimmed to an exact target."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from adapmtl.errors import SparsifyError
from adapmtl.sparsity.bank import BANK_ATTRIBUTE, require_bank
from adapmtl.sparsity.report import SparsityReport, report_exact_zeros, sparsity_report
from adapmtl.sparsity.shift import shift_for_zeros
from adapmtl.sparsity.soft_threshold import soft_threshold
from adapmtl.sparsity.sparsify import sparse_layers

TARGET_TOLERANCE = 0.0005


@dataclass(frozen=True)
class FinalizeReport:
    """What finalize did. `shift` is the common change of every threshold score (logit
    units; 0 without a target); `before` is the sparsity the thresholds gave, `after`
    the sparsity of the baked weights; `pruned`/`revived` count the weights the trim
    zeroed or brought back; `max_change` is the largest change of a surviving weight."""

    target: float | None
    shift: float
    before: SparsityReport
    after: SparsityReport
    pruned: int
    revived: int
    max_change: float

    def __str__(self) -> str:
        if self.target is None:
            return f"finalized at {self.after.overall:.4%} overall sparsity (no trim)"
        lines = [
            f"finalized to target {self.target:.4%}: overall {self.before.overall:.4%} -> {self.after.overall:.4%} "
            f"(thresholds shifted by {self.shift:+.4f} in logit space; {self.pruned:,} weights pruned, "
            f"{self.revived:,} revived, largest change of a kept weight {self.max_change:.2e})"
        ]
        for name, comp in self.after.components.items():
            lines.append(f"  {name:<18} {self.before.components[name].sparsity:>8.4%} -> {comp.sparsity:.4%}")
        return "\n".join(lines)


def finalize(model: nn.Module, target: float | None = None) -> FinalizeReport:
    """Remove the soft-threshold reparameterization in place; zeros become real zeros.

    Every sparsified layer gets back its original class with an ordinary `weight`
    parameter (the same Parameter object the optimizer held) holding Ŵ, and the
    threshold bank is removed.

    Without `target`, outputs equal the sparsified model's exactly. With `target`
    (0 ≤ target < 1), every threshold moves by one common shift in logit space (the
    learned allocation across components is kept) so that the overall sparsity equals
    `target` within ±0.0005, usually to the weight. Returns a FinalizeReport.

    Raises SparsifyError (and leaves the model unchanged) if the model is not sparsified,
    if `target` is not in [0, 1), if no whole number of its prunable weights lies within
    ±0.0005 of `target` (a model of a few hundred weights), or if the weights' values make
    the target unreachable (many exact zeros, ties, or |w| ≥ 1).
    """
    bank = require_bank(model, "finalize")
    if target is not None and not (isinstance(target, (int, float)) and 0.0 <= target < 1.0):
        raise SparsifyError(f"target must be a sparsity in [0, 1), got {target!r}")
    layers = list(sparse_layers(model))
    before = sparsity_report(model)
    if target is not None:
        _check_reachable(target, before.numel)

    with torch.no_grad():
        if target is None:
            shift = 0.0
            taus = torch.sigmoid(bank.scores.detach())
        else:
            shift = shift_for_zeros(layers, bank, round(target * before.numel))
            taus = torch.sigmoid(bank.scores.detach().double() + shift)
        pruned = revived = zeros = 0
        max_change = 0.0
        finalized = []  # computed in full before any layer changes, so a failure leaves the model as it was
        for layer in layers:
            dense = layer.dense_weight.detach()
            old = soft_threshold(dense, torch.sigmoid(bank.scores.detach()[layer.parametrization.group]))
            tau = taus[layer.parametrization.group]
            new = soft_threshold(dense.to(tau.dtype), tau).to(dense.dtype)
            pruned += int(((old != 0) & (new == 0)).sum())
            revived += int(((old == 0) & (new != 0)).sum())
            zeros += int((new == 0).sum())
            kept = (old != 0) & (new != 0)
            if kept.any():
                max_change = max(max_change, float((new - old)[kept].abs().max()))
            finalized.append(new)
        if target is not None and abs(zeros / before.numel - target) > TARGET_TOLERANCE:
            raise SparsifyError(
                f"could not reach target sparsity {target:.4%}: the nearest reachable is {zeros / before.numel:.4%}, "
                "because too many weights are exactly zero, tied in magnitude, or |w| ≥ 1 (which no threshold "
                "below 1 removes). The model is unchanged."
            )
        for layer, new in zip(layers, finalized):
            _restore_layer(layer.module)
            layer.module.weight.copy_(new)

    _remove_bank(model, bank)
    after = report_exact_zeros({l.name: (l.parametrization.component, l.module.weight) for l in layers})
    return FinalizeReport(target, shift, before, after, pruned, revived, max_change)


def _check_reachable(target: float, numel: int) -> None:
    """A SparsifyError unless some whole count of zeros among `numel` weights lies within tolerance of `target`."""
    nearest = round(target * numel)
    if abs(nearest / numel - target) > TARGET_TOLERANCE:
        below, above = math.floor(target * numel), math.ceil(target * numel)
        raise SparsifyError(
            f"target sparsity {target:.4%} cannot be met within ±{TARGET_TOLERANCE:g} by any whole number of the "
            f"model's {numel} prunable weights: the nearest are {below}/{numel} = {below / numel:.4%} and "
            f"{above}/{numel} = {above / numel:.4%}. Choose one of those as the target. The model is unchanged."
        )


def _restore_layer(module: nn.Module) -> None:
    """Give the layer back its class and its dense weight Parameter (same object).

    Not `parametrize.remove_parametrizations`: it deletes the `weight` property from
    the layer's injected class, which `copy.deepcopy` shares between a model and its
    copies, and so would break every other copy. sparsify refuses layers with other
    parametrizations, so ours is the only one and the class's base is the original.
    """
    original = module.parametrizations.weight.original
    delattr(module, "parametrizations")
    module.__class__ = module.__class__.__bases__[0]
    module.register_parameter("weight", original)


def _remove_bank(model: nn.Module, bank: nn.Module) -> None:
    for module in model.modules():
        if getattr(module, "_modules", {}).get(BANK_ATTRIBUTE) is bank:
            delattr(module, BANK_ATTRIBUTE)
            return
