"""`SparsifyRecipe`: sparsify → threshold group → controller → finalize, for any training loop.

The framework-neutral core of the Lightning and Hugging Face callbacks (and usable by hand in a
custom loop): it holds the knobs of `adapmtl.sparsify`, of the `SparsityController` and of the
threshold learning-rate rule, and does each stage the way adapmtl's own engine does (AdapMTL, ACM MM
2024; docs/method.md §1-2). Imports neither Lightning nor transformers.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from adapmtl.errors import SparsifyError
from adapmtl.integrations.optim import (
    THRESHOLD_ROLE, split_threshold_group, threshold_group_index, threshold_lr, unwrap_optimizer,
)
from adapmtl.sparsity.bank import find_bank
from adapmtl.sparsity.components import ComponentSpec
from adapmtl.sparsity.controller import SparsityController
from adapmtl.sparsity.finalize import FinalizeReport, finalize
from adapmtl.sparsity.guard import DEFAULT_MIN_DENSITY
from adapmtl.sparsity.plain import plain_state_dict
from adapmtl.sparsity.report import SparsityReport
from adapmtl.sparsity.sparsify import sparsify


class _PressTrigger(torch.optim.Optimizer):
    """An optimizer with nothing to update: `step()` only runs its step pre-hooks, i.e. the pressure
    that `SparsityController.attach` registers. For loops whose real optimizer runs its pre-hooks before
    the gradient exists (Lightning passes the forward/backward closure into `optimizer.step`)."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__([scores], {})  # holds the scores (as `attach` checks) but never updates them

    def step(self, closure: Callable[[], Any] | None = None) -> None:  # noqa: D102 (nothing to update)
        return None


class SparsifyRecipe:
    """What to sparsify, how to steer it and how to finish: AdapMTL's soft thresholds (one learnable
    threshold per component; ACM MM 2024) with adapmtl's exact-target controller (docs/method.md §2).

    Stages, in the order a training loop needs them:

    1. `sparsify(model)` before the optimizer is built (`adapmtl.sparsify` with this recipe's options;
       a model already sparsified is used as it is);
    2. `setup_optimizer(optimizer, model, total_steps, schedulers=...)` once the optimizer (and its LR
       schedulers) exist, before the first step and before a checkpoint's optimizer state is loaded:
       gives the threshold scores their own group with the learning-rate rule
       (`adapmtl.integrations.optim.threshold_lr`) and builds the `SparsityController`;
    3. `press()` once per optimizer step after the gradients are final (accumulated, averaged,
       unscaled) and before the step, unless the controller was attached to the real optimizer
       (`setup_optimizer(attach=True)`, for loops that call `optimizer.step()` after backward);
       `step(n)` after the n-th optimizer step (1-based);
    4. `finalize_model(model)` at the end: ordinary layers with real zeros, trimmed to `target`.

    Args:
        target: the overall sparsity to reach, in [0, 1) (share of the prunable weights that are zero).
        components, exclude, granularity, init, min_density, embeddings, parameters: as `adapmtl.sparsify`, except
            `init`, whose default is "auto" as in adapmtl's engine (`method.init`): it starts each score
            within learning reach of the weights' scale, which a run that is not the paper's 20,000 steps
            needs (docs/method.md §2).
        policy, reach_at, schedule, tolerance, interval, slack: as `SparsityController`.
        total_steps: optimizer steps of the run; None: the framework's count (Lightning's max_steps or
            estimated_stepping_batches, the Hugging Face Trainer's max_steps).
        threshold_lr, threshold_lr_scale, lr_step, lr_gamma: the scores' learning rate, as the engine's
            `train.threshold_lr`, `train.threshold_lr_scale` (`threshold_lr`'s `scale`) and the StepLR
            (`lr_step`, `lr_gamma`, in optimizer steps) that "auto" assumes when the schedule cannot be read
            (it is read from a per-step LambdaLR, e.g. every Hugging Face schedule). Applied only when the
            scores share a group; a group of their own (`threshold_param_groups`) is left as built.
        threshold_weight_decay: the scores' weight decay; None keeps that of the group they were in
            (the paper decays everything, thresholds included: docs/method.md §5).
        finalize: finalize to `target` at the end of training (`finalize_model`).

    Attributes (after the stages ran): `controller`, `threshold_group` (the scores' optimizer group),
    `threshold_scale` (their learning rate over their source group's; None if the group was the user's),
    `last_report` (the controller's latest SparsityReport), `finalize_report` (FinalizeReport).

    Raises:
        SparsifyError: `target` not in [0, 1) (others are checked where they are used: `sparsify`,
            `SparsityController`, `threshold_lr`).
    """

    def __init__(
        self,
        target: float,
        *,
        components: ComponentSpec | None = None,
        exclude: Iterable[str] = (),
        granularity: str = "component",
        init: float | str = "auto",
        min_density: float = DEFAULT_MIN_DENSITY,
        embeddings: bool = False,
        parameters: Iterable[str] = (),
        policy: str = "exact",
        reach_at: float = 2 / 3,
        schedule: str = "cubic",
        tolerance: float = 5e-3,
        interval: int | None = None,
        slack: float = 0.1,
        total_steps: int | None = None,
        threshold_lr: float | None = None,
        threshold_lr_scale: float | str = "auto",
        lr_step: int | None = None,
        lr_gamma: float = 1.0,
        threshold_weight_decay: float | None = None,
        finalize: bool = True,
    ) -> None:
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.0 <= target < 1.0:
            raise SparsifyError(f"target must be a sparsity in [0, 1), got {target!r}")
        if total_steps is not None and int(total_steps) < 1:
            raise SparsifyError(f"total_steps must be a positive number of optimizer steps, got {total_steps!r}")
        self.target = float(target)
        self.sparsify_options: dict[str, Any] = {
            "components": components, "exclude": tuple(exclude), "granularity": granularity, "init": init,
            "min_density": min_density, "embeddings": embeddings,
        }
        if parameters:  # passed only when used, so the recipe works with a sparsify that predates the knob
            self.sparsify_options["parameters"] = tuple(parameters)
        self.controller_options: dict[str, Any] = {
            "reach_at": reach_at, "schedule": schedule, "policy": policy, "tolerance": tolerance,
            "interval": interval, "slack": slack,
        }
        self.total_steps = None if total_steps is None else int(total_steps)
        self.lr_options: dict[str, Any] = {"threshold_lr": threshold_lr, "scale": threshold_lr_scale,
                                           "lr_step": lr_step, "lr_gamma": lr_gamma}
        self.threshold_weight_decay = threshold_weight_decay
        self.finalize = bool(finalize)
        self.controller: SparsityController | None = None
        self.threshold_group: dict[str, Any] | None = None
        self.threshold_scale: float | None = None
        self.last_report: SparsityReport | None = None
        self.finalize_report: FinalizeReport | None = None
        self.last_step = 0
        self._optimizer: torch.optim.Optimizer | None = None
        self._trigger: _PressTrigger | None = None
        self._pending_state: dict[str, Any] | None = None

    # 1. sparsify ---------------------------------------------------------------------------------------
    def sparsify(self, model: nn.Module) -> nn.Module:
        """Sparsify `model` in place with this recipe's options (`adapmtl.sparsify`); returns it. A model
        already sparsified (by an earlier fit, or by hand) is returned unchanged.

        Raises SparsifyError or ComponentError as `adapmtl.sparsify`."""
        if find_bank(model) is None:
            sparsify(model, **self.sparsify_options)
        return model

    # 2. optimizer group and controller ----------------------------------------------------------------
    def setup_optimizer(
        self,
        optimizer: Any,
        model: nn.Module,
        total_steps: int,
        *,
        schedulers: Sequence[Any] = (),
        lr_lambda: Callable[[int], float] | None = None,
        attach: bool = False,
    ) -> SparsityController:
        """Give the threshold scores of `model` their own group in `optimizer` and build the controller.

        When the scores share a group, they move to a new one (`split_threshold_group`) whose learning
        rate is k_total × the source group's, k_total = threshold_lr(base, steps, ...) / base with `base`
        the source group's initial learning rate (`initial_lr` when a scheduler set it, else `lr`);
        `schedulers` are kept consistent, and "auto" reads the schedule from `lr_lambda` when given.
        When the scores already have a group of their own it is used as it is.

        Args:
            optimizer: the (possibly wrapped) torch optimizer built from the model's parameters.
            model: the sparsified model (or a module containing it).
            total_steps: optimizer steps of the run, used when the recipe's `total_steps` is None.
            schedulers: the LR schedulers of `optimizer`.
            lr_lambda: the schedule's factor per optimizer step for the scores' source group, if known.
            attach: apply the controller's pressure in `optimizer`'s step pre-hook (right for loops that
                call `optimizer.step()` after backward); False: the caller calls `press()` itself.

        Returns:
            The `SparsityController` (also `self.controller`).

        Raises:
            SparsifyError: `model` is not sparsified, no group holds its scores, or a controller option
                is invalid. ValueError: an invalid learning-rate option (`threshold_lr`).
        """
        steps = self.total_steps or int(total_steps)
        inner = unwrap_optimizer(optimizer)
        index = threshold_group_index(inner, model)
        if index is None:
            split_threshold_group(inner, model, 1.0)  # raises the SparsifyError that says how to build the optimizer
        source = inner.param_groups[index]
        if len(source["params"]) == 1:
            self.threshold_group, self.threshold_scale = source, None  # the user's own group, left as built
        else:
            base = float(source.get("initial_lr", source["lr"]))
            lr = threshold_lr(base, steps, lr_lambda=lr_lambda, **self.lr_options) if base > 0 else base
            self.threshold_scale = lr / base if base > 0 else 1.0
            self.threshold_group = split_threshold_group(inner, model, self.threshold_scale, schedulers=schedulers,
                                                         weight_decay=self.threshold_weight_decay)
        self.threshold_group.setdefault("role", THRESHOLD_ROLE)
        self.controller = SparsityController(model, self.target, steps, **self.controller_options)
        self.last_step, self.last_report = 0, None  # a new run; a restored state (below) says otherwise
        self._optimizer = inner
        if attach:
            self._trigger = None
            self.controller.attach(inner)
        else:
            self._trigger = _PressTrigger(self.controller.bank.scores)
            self.controller.attach(self._trigger)
        if self._pending_state is not None:
            self.load_state_dict(self._pending_state)
        return self.controller

    # 3. every step --------------------------------------------------------------------------------------
    def holds_thresholds(self, optimizer: Any) -> bool:
        """Whether `optimizer` (or the one it wraps) is the one that updates the threshold scores."""
        return self._optimizer is not None and unwrap_optimizer(optimizer) is self._optimizer

    def press(self) -> None:
        """Add the controller's pressure to the scores' final gradient, once, before the optimizer step
        (what `SparsityController.attach` does in a step pre-hook; docs/method.md §2); for policy "freeze",
        drop the scores' gradient while the gate is closed (sparsity at or above the target). Nothing to
        do without a controller, or when the controller is attached to the optimizer itself."""
        if self._trigger is not None:
            self._trigger.step()

    def step(self, step: int) -> SparsityReport | None:
        """`SparsityController.step(step)` after optimizer step number `step` (1-based), once per step
        (a repeated or earlier step number is ignored); returns the report when it measured.

        Raises SparsifyError when `setup_optimizer` has not run."""
        if self.controller is None:
            raise SparsifyError("the recipe's controller does not exist yet: call setup_optimizer(optimizer, model, "
                                "total_steps) once the optimizer is built")
        if step <= self.last_step:
            return None
        self.last_step = step
        report = self.controller.step(step)
        if report is not None:
            self.last_report = report
        return report

    # 4. the end -----------------------------------------------------------------------------------------
    def finalize_model(self, model: nn.Module) -> FinalizeReport:
        """`adapmtl.finalize(model, target)`: ordinary layers holding Ŵ, trimmed to the target within
        ±0.0005 (also `self.finalize_report`). Raises SparsifyError as `finalize` (e.g. a target no whole
        number of the model's weights meets)."""
        self.finalize_report = finalize(model, target=self.target)
        return self.finalize_report

    def plain_state_dict(self, model: nn.Module, state_dict: Mapping[str, torch.Tensor] | None = None, *,
                         prefix: str = "") -> dict[str, torch.Tensor]:
        """`adapmtl.sparsity.plain.plain_state_dict` with this recipe's sparsify options: a checkpoint's
        sparsified `state_dict` (keys under `prefix`) as the state_dict of the plain `model` class.
        `model` may be plain (then only a copy is sparsified, to read the layout) or sparsified."""
        options = {} if find_bank(model) is not None else self.sparsify_options
        return plain_state_dict(model, state_dict, prefix=prefix, **options)

    # resume ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the controller's state and the last step it saw (tensors and plain
        values only, so `torch.load(weights_only=True)` reads it)."""
        if self.controller is not None:
            controller = self.controller.state_dict()
        else:  # restored but not yet applied, or nothing yet
            controller = (self._pending_state or {}).get("controller")
        return {"controller": controller, "last_step": self.last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`; before `setup_optimizer` it is kept and applied once the controller exists."""
        self.last_step = int(state.get("last_step", 0))
        if self.controller is None:
            self._pending_state = dict(state)
            return
        self._pending_state = None
        if state.get("controller") is not None:
            self.controller.load_state_dict(state["controller"])
