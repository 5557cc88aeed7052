"""`finalize`: bake the zeros into ordinary weights, optionally trimmed to an exact target."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from adapmtl.errors import SparsifyError
from adapmtl.sparsity.bank import BANK_ATTRIBUTE, require_bank
from adapmtl.sparsity.report import SparsityReport, dense_parameters, report_exact_zeros, sparsity_report
from adapmtl.sparsity.guard import max_sparsity
from adapmtl.sparsity.shift import global_allocation, shift_for_zeros
from adapmtl.sparsity.soft_threshold import soft_threshold
from adapmtl.sparsity.sparsify import refresh_caps, sparse_layers

TARGET_TOLERANCE = 0.0005


@dataclass(frozen=True)
class FinalizeReport:
    """What finalize did. `shift` is the common change of every threshold score (logit
    units; 0 without a target); `before` is the sparsity the thresholds gave, `after`
    the sparsity of the baked weights; `pruned`/`revived` count the weights the trim
    zeroed or brought back; `max_change` is the largest change of a surviving weight.
    `global_allocation` is {component: sparsity} that one threshold over all weights would give
    at the same overall sparsity (`adapmtl.sparsity.shift.global_allocation`): the learned
    allocation is `after`'s components set against it. `guarded` names the layers the collapse
    guard held at their minimum density, `collapsed` those left all zero (only with min_density 0).
    `target` is None when finalize did not trim (`trimmed` False): the sparsity is then what the
    thresholds gave (`after.overall`, the final sparsity), and `aimed_at` is the target the run
    aimed at but was not trimmed to (the adapmtl method under policy "freeze", as the original
    code: no final trim), None when it had none."""

    target: float | None
    shift: float
    before: SparsityReport
    after: SparsityReport
    pruned: int
    revived: int
    max_change: float
    global_allocation: dict[str, float] = field(default_factory=dict)
    guarded: list[str] = field(default_factory=list)
    collapsed: list[str] = field(default_factory=list)
    aimed_at: float | None = None

    @property
    def trimmed(self) -> bool:
        """Whether finalize moved the thresholds to reach an exact `target`."""
        return self.target is not None

    def __str__(self) -> str:
        if self.target is None:
            aimed = "" if self.aimed_at is None else (
                f"; the run aimed at {self.aimed_at:.4%} and ends {self.after.overall - self.aimed_at:+.4%} from it")
            return f"finalized at {self.after.overall:.4%} overall sparsity (no trim{aimed})"
        lines = [
            f"finalized to target {self.target:.4%}: overall {self.before.overall:.4%} -> {self.after.overall:.4%} "
            f"(thresholds shifted by {self.shift:+.4f} in logit space; {self.pruned:,} weights pruned, "
            f"{self.revived:,} revived, largest change of a kept weight {self.max_change:.2e})"
        ]
        for name, comp in self.after.components.items():
            one = self.global_allocation.get(name)
            lines.append(f"  {name:<18} {self.before.components[name].sparsity:>8.4%} -> {comp.sparsity:.4%}"
                         + (f"  (one global threshold: {one:.4%})" if one is not None else ""))
        if self.guarded:
            lines.append(f"  collapse guard held {len(self.guarded)} layer(s) at their minimum density: "
                         + ", ".join(self.guarded))
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

    Both respect the collapse guard (`adapmtl.sparsity.guard`): its caps are first recomputed
    from the current weights, so every layer keeps its min_density share. A layer that ends all
    zero anyway (min_density 0) is named in a UserWarning and in the report's `collapsed`.

    Raises SparsifyError (and leaves the model unchanged) if the model is not sparsified,
    if `target` is not in [0, 1), if no whole number of its prunable weights lies within
    ±0.0005 of `target` (a model of a few hundred weights), if the collapse guard's min_density
    allows no sparsity as high as `target`, or if the weights' values make the target
    unreachable (many exact zeros, ties, or |w| ≥ 1).
    """
    bank = require_bank(model, "finalize")
    if target is not None and not (isinstance(target, (int, float)) and 0.0 <= target < 1.0):
        raise SparsifyError(f"target must be a sparsity in [0, 1), got {target!r}")
    layers = list(sparse_layers(model))
    if target is not None:
        _check_reachable(target, sum(layer.dense_weight.numel() for layer in layers))
        _check_guard(target, [layer.dense_weight.numel() for layer in layers], bank.min_density)
    caps = bank.caps.clone()  # restored if the trim fails: the model is then unchanged
    refresh_caps(model)
    before = sparsity_report(model)

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
            cap = bank.caps[layer.parametrization.layer]
            old = soft_threshold(dense, torch.minimum(torch.sigmoid(bank.scores.detach()[layer.parametrization.group]),
                                                      cap))
            tau = torch.minimum(taus[layer.parametrization.group], cap.to(taus.dtype))
            new = soft_threshold(dense.to(tau.dtype), tau).to(dense.dtype)
            pruned += int(((old != 0) & (new == 0)).sum())
            revived += int(((old == 0) & (new != 0)).sum())
            zeros += int((new == 0).sum())
            kept = (old != 0) & (new != 0)
            if kept.any():
                max_change = max(max_change, float((new - old)[kept].abs().max()))
            finalized.append(new)
        if target is not None and abs(zeros / before.numel - target) > TARGET_TOLERANCE:
            bank.caps.copy_(caps)
            raise SparsifyError(
                f"could not reach target sparsity {target:.4%}: the nearest reachable is {zeros / before.numel:.4%}, "
                "because too many weights are exactly zero, tied in magnitude, or |w| ≥ 1 (which no threshold "
                "below 1 removes). The model is unchanged."
            )
        one_threshold = global_allocation(layers, bank, zeros)
        guarded = [l.name for l, new in zip(layers, finalized)
                   if float(bank.caps[l.parametrization.layer]) < float(taus[l.parametrization.group])]
        for module in {id(layer.module): layer.module for layer in layers}.values():
            _restore_layer(module)
        for layer, new in zip(layers, finalized):
            getattr(layer.module, layer.attribute).copy_(new)

    _remove_bank(model, bank)
    after = report_exact_zeros({l.name: (l.parametrization.component, getattr(l.module, l.attribute)) for l in layers},
                               dense_parameters(model, [getattr(l.module, l.attribute) for l in layers]))
    collapsed = after.collapsed
    if collapsed:
        warnings.warn(f"finalize left {len(collapsed)} layer(s) all zero, so their outputs no longer depend on "
                      f"their inputs: {', '.join(collapsed)} (the collapse guard is off: min_density=0)",
                      stacklevel=2)
    return FinalizeReport(target, shift, before, after, pruned, revived, max_change, one_threshold, guarded, collapsed)


def _check_guard(target: float, numels: list[int], min_density: float) -> None:
    """A SparsifyError when the collapse guard keeps too many weights for `target`."""
    highest = max_sparsity(numels, min_density)
    if round(target * sum(numels)) > round(highest * sum(numels)):
        raise SparsifyError(
            f"target sparsity {target:.4%} is above the {highest:.4%} that the collapse guard allows: every layer "
            f"keeps at least max(1, ceil({min_density:g} x its weights)). Lower the target, or sparsify with a "
            "smaller min_density (0 allows layers to collapse). The model is unchanged."
        )


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
    """Give the layer back its class and its dense weight Parameters (the same objects; several for an
    attention's q/k/v projections).

    Not `parametrize.remove_parametrizations`: it deletes the `weight` property from
    the layer's injected class, which `copy.deepcopy` shares between a model and its
    copies, and so would break every other copy. sparsify refuses layers with other
    parametrizations, so ours is the only one and the class's base is the original.
    """
    originals = {attribute: p.original for attribute, p in module.parametrizations.items()}
    order = next(iter(module.parametrizations.values()))[0].order
    delattr(module, "parametrizations")
    module.__class__ = module.__class__.__bases__[0]
    for attribute, original in originals.items():
        module.register_parameter(attribute, original)
    # back in the layer's own order (weight before bias): code that pairs parameters by position,
    # such as optimizer state loaded into the plain model, must see the plain model's order
    rank = {name: i for i, name in enumerate(order)}
    reordered = sorted(module._parameters.items(), key=lambda item: rank.get(item[0], len(rank)))
    module._parameters.clear()
    module._parameters.update(reordered)


def _remove_bank(model: nn.Module, bank: nn.Module) -> None:
    for module in model.modules():
        if getattr(module, "_modules", {}).get(BANK_ATTRIBUTE) is bank:
            delattr(module, BANK_ATTRIBUTE)
            return
