"""The threshold scores' own optimizer group, for optimizers that adapmtl's engine does not build.

The engine gives the scores their own group with the learning rate (threshold_lr or lr) × k, where
k = max(1, B_paper / B_run) gives a run of any length the threshold budget of the paper's recipe
(`adapmtl.sparsity.budget`; docs/method.md §2). These helpers apply the same rule to an optimizer
that a training framework (Lightning, Hugging Face Trainer) or the user builds: `threshold_lr` is the
rule, `threshold_param_groups` the groups to build an optimizer from, and `split_threshold_group`
moves the scores out of an optimizer's existing group (and keeps its LR schedulers consistent).
`threshold_lr` itself lives in `adapmtl.sparsity.budget`, where the engine reads it too.
Framework-neutral: imports neither Lightning nor transformers.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

from adapmtl.errors import SparsifyError
from adapmtl.sparsity.budget import threshold_lr
from adapmtl.sparsity.sparsify import threshold_parameters

THRESHOLD_ROLE = "thresholds"
"""The `"role"` of the scores' optimizer group, as in the engine (`adapmtl.methods.base.Method.param_groups`)."""
GROUP_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")
"""Per-group hyperparameters in learning-rate units (the optimizer's, LRScheduler's, OneCycleLR's)."""
SCHEDULER_LR_LISTS = ("base_lrs", "_last_lr", "min_lrs", "max_lrs")
"""Per-group lists of learning rates kept by torch's LR schedulers (ReduceLROnPlateau, CyclicLR included)."""
SCHEDULER_GROUP_LISTS = ("lr_lambdas", "base_momentums", "max_momentums")
"""Other per-group lists of torch's LR schedulers (LambdaLR, MultiplicativeLR, CyclicLR)."""


def threshold_param_groups(
    model: nn.Module,
    lr: float,
    total_steps: int,
    *,
    weight_decay: float | None = None,
    **rule: Any,
) -> list[dict[str, Any]]:
    """Optimizer groups for a sparsified `model`: every other parameter, then the threshold scores with
    the learning rate `threshold_lr(lr, total_steps, **rule)` and `"role": "thresholds"`.

    For an optimizer built by hand (e.g. in a LightningModule's `configure_optimizers`)::

        groups = threshold_param_groups(self, lr=1e-3, total_steps=self.trainer.estimated_stepping_batches)
        return torch.optim.Adam(groups, lr=1e-3)

    Args:
        model: a model prepared by `adapmtl.sparsify` (or one that contains it).
        lr, total_steps, **rule: as `threshold_lr` (threshold_lr, scale, lr_step, lr_gamma, lr_lambda).
        weight_decay: the scores' weight decay; None leaves the optimizer's default (the paper decays
            everything, thresholds included: docs/method.md §5).

    Returns:
        [{"params": [...]}, {"params": [scores], "lr": float, "role": "thresholds"(, "weight_decay")}].

    Raises:
        SparsifyError: `model` is not sparsified. ValueError: as `threshold_lr`.
    """
    scores = threshold_parameters(model)
    ids = {id(p) for p in scores}
    group: dict[str, Any] = {"params": scores, "lr": threshold_lr(lr, total_steps, **rule), "role": THRESHOLD_ROLE}
    if weight_decay is not None:
        group["weight_decay"] = weight_decay
    return [{"params": [p for p in model.parameters() if id(p) not in ids]}, group]


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside framework wrappers (accelerate's AcceleratedOptimizer `.optimizer`,
    Lightning's LightningOptimizer `._optimizer`); `optimizer` itself when it wraps none."""
    while True:
        inner = next((getattr(optimizer, a) for a in ("optimizer", "_optimizer")
                      if isinstance(getattr(optimizer, a, None), torch.optim.Optimizer)), None)
        if inner is None or inner is optimizer:
            return optimizer
        optimizer = inner


def threshold_group_index(optimizer: Any, model: nn.Module) -> int | None:
    """The index of the group of `optimizer` that holds `model`'s threshold scores; None if none does.

    Raises SparsifyError when `model` is not sparsified."""
    scores = threshold_parameters(model)[0]
    for index, group in enumerate(unwrap_optimizer(optimizer).param_groups):
        if any(p is scores for p in group["params"]):
            return index
    return None


def split_threshold_group(
    optimizer: Any,
    model: nn.Module,
    scale: float,
    *,
    schedulers: Iterable[Any] = (),
    weight_decay: float | None = None,
) -> dict[str, Any]:
    """Move `model`'s threshold scores out of the optimizer group they share into a group of their
    own, appended last, whose learning rates are that group's × `scale`; returns the new group.

    The new group copies its source group's hyperparameters (betas, weight decay, …) and multiplies
    those in learning-rate units (`GROUP_LR_KEYS`) by `scale`; `weight_decay`, when given, replaces
    the copied one. Each LR scheduler of `schedulers` that drives this optimizer (SequentialLR's and
    ChainedScheduler's inner ones included) gets the source group's entry appended to its per-group
    lists (`SCHEDULER_LR_LISTS` × `scale`, `SCHEDULER_GROUP_LISTS` as is), so the scores' learning rate
    stays `scale` × the source group's at every step, whatever the schedule (tested for StepLR,
    LambdaLR, OneCycleLR, CosineAnnealingLR, SequentialLR, ReduceLROnPlateau). Call it before the
    optimizer's first step and before its state is loaded from a checkpoint (the saved state then
    has the same groups). When the scores already have a group of their own, it is returned unchanged.

    Args:
        optimizer: a torch optimizer (or a wrapper of one: `unwrap_optimizer`) holding the scores.
        model: the sparsified model.
        scale: the scores' learning rate over their source group's (> 0; see `threshold_lr`).
        schedulers: the LR schedulers built on the optimizer (others are ignored).
        weight_decay: the scores' weight decay; None keeps the source group's.

    Raises:
        SparsifyError: `model` is not sparsified, or no group of `optimizer` holds its scores (the
            optimizer was built from some of the model's parameters only).
        ValueError: `scale` is not positive.
    """
    if not scale > 0:
        raise ValueError(f"scale must be a positive factor on the learning rate, got {scale!r}")
    inner = unwrap_optimizer(optimizer)
    index = threshold_group_index(inner, model)
    if index is None:
        raise SparsifyError(
            "no optimizer group holds the threshold scores, so the thresholds would never learn: build the optimizer "
            "from all of the model's parameters (model.parameters(), after adapmtl.sparsify), or from "
            "adapmtl.integrations.threshold_param_groups(model, lr, total_steps)")
    source = inner.param_groups[index]
    if len(source["params"]) == 1:
        return source
    scores = threshold_parameters(model)[0]
    groups_before = len(inner.param_groups)
    group = {key: value for key, value in source.items() if key != "params"}
    for key in GROUP_LR_KEYS:
        if key in group:
            group[key] = group[key] * scale
    if weight_decay is not None:
        group["weight_decay"] = weight_decay
    group["role"] = THRESHOLD_ROLE
    group["params"] = [scores]
    source["params"] = [p for p in source["params"] if p is not scores]
    inner.add_param_group(group)
    seen: set[int] = set()
    for scheduler in schedulers:
        _extend_scheduler(scheduler, inner, index, groups_before, scale, seen)
    return inner.param_groups[-1]


def _extend_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer, source: int, groups_before: int,
                      scale: float, seen: set[int]) -> None:
    """Append the new group's entry to `scheduler`'s per-group lists (once per scheduler object)."""
    if id(scheduler) in seen:
        return
    seen.add(id(scheduler))
    for inner in getattr(scheduler, "_schedulers", None) or ():  # SequentialLR, ChainedScheduler
        _extend_scheduler(inner, optimizer, source, groups_before, scale, seen)
    bound = getattr(scheduler, "optimizer", None)
    if bound is None or unwrap_optimizer(bound) is not optimizer:
        return
    for name in SCHEDULER_LR_LISTS + SCHEDULER_GROUP_LISTS:
        values = getattr(scheduler, name, None)
        if isinstance(values, list) and len(values) == groups_before:
            entry = values[source]
            values.append(entry * scale if name in SCHEDULER_LR_LISTS else entry)
