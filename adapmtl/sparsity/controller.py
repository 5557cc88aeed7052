"""Steering overall sparsity to a target, exactly, without tuning `init` or weight decay."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from adapmtl.errors import SparsifyError
from adapmtl.sparsity.bank import require_bank
from adapmtl.sparsity.report import SparsityReport, sparsity_report
from adapmtl.sparsity.shift import shift_for_zeros
from adapmtl.sparsity.sparsify import refresh_caps, sparse_layers

POLICIES = ("exact", "freeze")
SCHEDULES = ("cubic", "linear")
PRESSURE_GAIN = 0.5
"""How much the pressure changes per measurement, in units of the scores' mean |∂L/∂s|."""
MARGIN = 0.1
"""Logits above a threshold within which weights count as at its margin (see `_margins`)."""


class SparsityController:
    """Brings a sparsified model's overall sparsity to `target` and holds it there.

    Call `step()` once after every `optimizer.step()`. It measures the sparsity once
    every `interval` steps (from the first) and at the last one (a measurement is a pass over the weights;
    a correction a selection over them), and does nothing in between; `interval`
    defaults to 10 for "exact" and to 1 for "freeze" (the paper checks every step).
    Policies:

    * "exact" (default): the thresholds learn, and the controller steers their learning,
      stepping in only as a guard. The sparsity follows a path that rises from 0 to
      `target` at step `reach_at · total_steps` (cubic: fast first, then gently, as in
      Zhu & Gupta; or linear). What carries it there is a common upward *pressure* p on
      the scores: every score's gradient becomes ∂L/∂s_c − p, so a score rises where its
      component's loss gradient is weaker than p and falls where it is stronger: the
      allocation is learned, the level is steered. p plays the part of the paper's weight
      decay on the thresholds (the original's only upward force, tuned by hand per
      setting), set online instead: at each measurement it grows by `PRESSURE_GAIN` times the
      scores' running mean |∂L/∂s| when the sparsity is behind the path and shrinks by as much
      when ahead (below 0 if need be: the scores then drift down). The
      controller *steps in* only when the sparsity leaves the band [floor(t), target]:
      the floor trails the path by up to `slack` (path(t) − slack · (1 − progress)), so
      learning has room to lag before it is corrected. Stepping in moves every score by
      one common shift in logit space, the one that lands exactly on the band's edge, so
      the allocation stays the learned one. The floor is looked up to the step before the
      next measurement. From `reach_at` on, the sparsity is held at `target` within
      `tolerance` at every measurement; `finalize(model, target)` makes it exact.
    * "freeze": the original code's rule (AdapMTL, ACM MM 2024), a gate re-checked at every
      measurement (every step by default), not a latch: while the overall sparsity measured
      after a step is at or above `target`, the thresholds do not move at the next step (with
      `attach`, their gradient is dropped before the optimizer step, so Adam's moments and weight
      decay skip them as in the original; without it, or as a backstop, the optimizer's update of
      the scores is undone); the weights keep training. When the sparsity falls back below the
      target (the weights grow past a frozen τ), the gate opens and the thresholds learn again.
      The final sparsity may drift from the target either way; the adapmtl method's finalize
      does not trim it under this policy (the original has no final trim).

    The decisions depend only on the weights and thresholds, which data-parallel
    training keeps identical on every rank, so every rank decides alike.

    Every measurement first refreshes the collapse guard's caps (`adapmtl.sparsity.guard`),
    and the shift never prunes the weights the guard keeps. The controller keeps account
    of what it did (`summary()`): its measurements, its interventions, and their total
    (Σ|δ|) and net (Σδ) shift, so that each score's own learning is s − s0 − net shift;
    and the layers it saw all zero (only possible with min_density 0), by first step.
    """

    def __init__(
        self,
        model: nn.Module,
        target: float,
        total_steps: int,
        *,
        reach_at: float = 2 / 3,
        schedule: str = "cubic",
        policy: str = "exact",
        tolerance: float = 5e-3,
        interval: int | None = None,
        slack: float = 0.1,
    ) -> None:
        self.bank = require_bank(model, "SparsityController")
        if not 0.0 <= target < 1.0:
            raise SparsifyError(f"target must be a sparsity in [0, 1), got {target!r}")
        if int(total_steps) < 1:
            raise SparsifyError(f"total_steps must be a positive number of optimizer steps, got {total_steps!r}")
        if not 0.0 < reach_at <= 1.0:
            raise SparsifyError(f"reach_at must be a fraction of training in (0, 1], got {reach_at!r}")
        if schedule not in SCHEDULES:
            raise SparsifyError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if policy not in POLICIES:
            raise SparsifyError(f"policy must be one of {POLICIES}, got {policy!r}")
        if not 0.0 <= tolerance < 0.01:
            raise SparsifyError(f"tolerance must be in [0, 0.01), got {tolerance!r}")
        if not 0.0 <= slack <= 1.0:
            raise SparsifyError(f"slack must be a share of sparsity in [0, 1], got {slack!r}")
        interval = interval if interval is not None else (10 if policy == "exact" else 1)
        if int(interval) < 1:
            raise SparsifyError(f"interval must be a positive number of steps, got {interval!r}")
        self.model = model
        self.target = float(target)
        self.total_steps = int(total_steps)
        self.reach_step = max(1, round(reach_at * self.total_steps))
        self.schedule = schedule
        self.policy = policy
        self.tolerance = float(tolerance)
        self.interval = int(interval)
        self.slack = float(slack)
        self.frozen_scores: torch.Tensor | None = None  # "freeze": the scores held while the gate is closed
        self.frozen_steps = 0  # "freeze": optimizer steps at which the thresholds were held
        self.pressure = torch.zeros((), dtype=self.bank.scores.dtype, device=self.bank.scores.device)
        self.gradient_scale = torch.zeros_like(self.pressure)  # running mean of |∂L/∂s|
        self.margins = torch.ones_like(self.bank.scores.detach())  # ∂zeros/∂s per group, relative to their mean
        # the pressure enters every backward pass, until attach(optimizer) moves it to once per step
        self._hook = self.bank.scores.register_hook(self._press) if policy == "exact" else None
        self.interventions = 0
        self.measurements = 0
        self.total_shift = 0.0  # Σ|δ| over interventions, logits
        self.net_shift = 0.0  # Σδ: the part of every score the controller, not learning, moved
        self.collapsed: dict[str, int] = {}  # layer -> first measured step at which it was all zero

    def _progress(self, step: int) -> float:
        return min(max(step / self.reach_step, 0.0), 1.0)

    def path(self, step: int) -> float:
        """The overall sparsity the pressure steers towards after `step` optimizer steps ("exact")."""
        progress = self._progress(step)
        if self.schedule == "linear":
            return self.target * progress
        return self.target * (1.0 - (1.0 - progress) ** 3)

    def floor(self, step: int) -> float:
        """The lowest overall sparsity allowed after `step` optimizer steps ("exact"): the path less
        `slack` · (1 − progress), at least 0; the target from reach_at on."""
        return max(0.0, self.path(step) - self.slack * (1.0 - self._progress(step)))

    def _press(self, grad: torch.Tensor) -> torch.Tensor:
        """The scores' gradient hook: note the gradient's scale, add the common upward pressure."""
        self.gradient_scale.mul_(0.9).add_(grad.detach().abs().mean(), alpha=0.1)  # on device, no host sync
        return grad - self.pressure * self.margins

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Apply the pressure once per `optimizer` step, to the scores' final gradient, instead of in
        every backward pass. Needed for gradient accumulation (one backward per micro-batch),
        data-parallel training (the hook would see each rank's own gradient, not the averaged one:
        the ranks' pressures would drift apart) and loss scaling (the hook sees scaled gradients);
        the engine always attaches. For the "freeze" policy, registers instead a step pre-hook that
        drops the scores' gradient while the gate is closed (the original drops it: the optimizer
        then neither moves the scores nor updates their Adam moments or weight decay).

        Raises SparsifyError if `optimizer` does not hold the threshold scores (built before
        `sparsify`, say): they would never learn, and the controller's common shifts would do all
        the work, silently."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if id(self.bank.scores) not in held:
            raise SparsifyError("the optimizer does not hold the threshold scores, so they would never learn: build "
                                "it after adapmtl.sparsify(model) (model.parameters() then includes them), or add "
                                "{'params': adapmtl.threshold_parameters(model)} as a parameter group")
        if self.policy == "freeze":
            def drop_while_frozen(*_: Any) -> None:
                if self.frozen_scores is not None:
                    self.bank.scores.grad = None

            optimizer.register_step_pre_hook(drop_while_frozen)
            return
        if self._hook is None:
            return
        self._hook.remove()
        self._hook = None

        def press_before_step(*_: Any) -> None:
            grad = self.bank.scores.grad
            if grad is not None:
                grad.copy_(self._press(grad))

        optimizer.register_step_pre_hook(press_before_step)

    @torch.no_grad()
    def _margins(self) -> None:
        """∂zeros/∂s_g of every group (the weights within MARGIN logits above its threshold, per
        logit; τ ≈ e^s), relative to their mean: the gradient of the sparsity constraint, so
        the pressure is a Lagrange multiplier's, p · ∂zeros/∂s_g, and prices a zero alike in
        every component."""
        taus = self.bank.thresholds()
        counts = torch.zeros_like(taus)
        for layer in sparse_layers(self.model):
            group = layer.parametrization.group
            cap = self.bank.caps[layer.parametrization.layer].to(taus.dtype)
            magnitude = layer.dense_weight.detach().abs()
            tau = taus[group]
            near = (magnitude > tau) & (magnitude <= tau * math.exp(MARGIN)) & (magnitude <= cap)
            counts[group] += near.sum().to(taus.dtype)
        counts = counts / MARGIN + 1.0  # +1: a group with no weight near its threshold still feels some pressure
        self.margins.copy_(counts / counts.mean())

    @torch.no_grad()
    def step(self, step: int) -> SparsityReport | None:
        """Apply the policy after optimizer step number `step` (1-based).

        Returns the SparsityReport when this step measured (steps 1, 1 + interval,
        1 + 2·interval, … and `total_steps`), else None.

        "freeze": if the gate was closed for this step, the scores are put back to what they were
        when it closed (a no-op when `attach` dropped their gradient); then, at a measurement, the
        gate closes for the steps up to the next measurement if the overall sparsity is at or above
        `target`, and opens otherwise.
        """
        if self.policy == "freeze" and self.frozen_scores is not None:
            self.bank.scores.copy_(self.frozen_scores)  # this step's update of the scores, undone
            self.frozen_steps += 1
        if (step - 1) % self.interval and step < self.total_steps:
            return None
        refresh_caps(self.model)
        report = self._measure(step)
        if self.policy == "freeze":  # a gate, re-checked at every measurement: no latch
            closed = report.overall >= self.target
            self.frozen_scores = self.bank.scores.detach().clone() if closed else None
            return report
        self._steer(step, report.overall)
        low, high = self.floor(step + self.interval - 1), self.target  # the floor until the next measurement
        if low - self.tolerance <= report.overall <= high + self.tolerance:
            return report
        # up to the floor: round the count up, so a small model never sits a weight below it
        zeros = math.ceil(low * report.numel) if report.overall < low else round(high * report.numel)
        layers = list(sparse_layers(self.model))
        shift = shift_for_zeros(layers, self.bank, zeros, torch.float32)
        self.bank.scores.add_(shift)
        self.interventions += 1
        self.total_shift += abs(shift)
        self.net_shift += shift
        return self._measure(step, count=False)

    def _steer(self, step: int, overall: float) -> None:
        """Set the pressure for the steps up to the next measurement (see the class doc)."""
        self._margins()
        path = self.path(step)
        if overall < path - self.tolerance:
            self.pressure.add_(self.gradient_scale, alpha=PRESSURE_GAIN)
        elif overall > path + self.tolerance:
            self.pressure.sub_(self.gradient_scale, alpha=PRESSURE_GAIN)

    def _measure(self, step: int, count: bool = True) -> SparsityReport:
        report = sparsity_report(self.model)
        self.measurements += count
        for name in report.collapsed:
            self.collapsed.setdefault(name, step)
        return report

    def summary(self) -> dict[str, Any]:
        """What the controller did, and how far each score learned on its own (plain numbers):
        measurements, interventions, total_shift (Σ|δ|, logits), net_shift (Σδ), init (s0),
        scores {group: s}, learned {group: s − s0 − net_shift} and collapsed {layer: first step};
        pressure: the current upward pressure on the scores' gradient; frozen ("freeze": whether
        the gate is closed now) and frozen_steps (the steps at which it held the thresholds)."""
        scores = dict(zip(self.bank.group_names, self.bank.scores.detach().double().tolist()))
        return {
            "pressure": float(self.pressure),
            "measurements": self.measurements,
            "interventions": self.interventions,
            "total_shift": self.total_shift,
            "net_shift": self.net_shift,
            "init": self.bank.init,
            "scores": scores,
            "learned": {g: s - self.bank.init - self.net_shift for g, s in scores.items()},
            "collapsed": dict(self.collapsed),
            "frozen": self.frozen_scores is not None,
            "frozen_steps": self.frozen_steps,
        }

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue exactly."""
        return {"frozen_scores": self.frozen_scores, "interventions": self.interventions,
                "measurements": self.measurements, "total_shift": self.total_shift, "net_shift": self.net_shift,
                "collapsed": dict(self.collapsed), "pressure": self.pressure.clone(),
                "gradient_scale": self.gradient_scale.clone(), "margins": self.margins.clone(),
                "frozen_steps": self.frozen_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        frozen = state["frozen_scores"]
        self.frozen_scores = None if frozen is None else frozen.to(self.bank.scores.device)
        self.interventions = int(state["interventions"])
        self.measurements = int(state["measurements"])
        self.total_shift = float(state["total_shift"])
        self.net_shift = float(state["net_shift"])
        self.collapsed = dict(state["collapsed"])
        self.pressure.copy_(state["pressure"])
        self.gradient_scale.copy_(state["gradient_scale"])
        self.margins.copy_(state["margins"])
        self.frozen_steps = int(state.get("frozen_steps", 0))  # absent from checkpoints older than the gate
