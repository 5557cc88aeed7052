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
from adapmtl.sparsity.sparsify import sparse_layers

POLICIES = ("exact", "freeze")
SCHEDULES = ("cubic", "linear")


class SparsityController:
    """Brings a sparsified model's overall sparsity to `target` and holds it there.

    Call `step()` once after every `optimizer.step()`. It measures the sparsity once
    every `interval` steps (from the first) and at the last one (a measurement is a pass over the weights;
    a correction a selection over them), and does nothing in between; `interval`
    defaults to 10 for "exact" and to 1 for "freeze" (the paper checks every step).
    Policies:

    * "exact" (default): the thresholds keep learning as in the paper, and the
      controller only steps in when the overall sparsity leaves the band
      [floor(t), target]. The floor rises from 0 to `target` at step
      `reach_at · total_steps` (cubic: fast first, then gently, as in Zhu & Gupta;
      or linear). Stepping in means moving every threshold score by one common shift
      (in logit space), the one that lands exactly on the band's edge, so the
      allocation across components stays the learned one. The floor is looked up
      to the step before the next measurement, so between measurements only the
      thresholds' own learning can move the sparsity (a little) below it.
      From `reach_at` on, the sparsity is held at `target` (within `tolerance` at
      every measurement; `finalize(model, target)` makes it exact).
    * "freeze": the paper's rule. Once overall sparsity reaches `target`, the
      thresholds stop moving (their optimizer updates are undone every step) while
      the weights keep training; the final sparsity may drift from the target.

    The decisions depend only on the weights and thresholds, which data-parallel
    training keeps identical on every rank, so every rank decides alike.
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
        tolerance: float = 1e-4,
        interval: int | None = None,
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
        self.frozen_scores: torch.Tensor | None = None
        self.interventions = 0

    def floor(self, step: int) -> float:
        """The lowest overall sparsity allowed after `step` optimizer steps ("exact")."""
        progress = min(max(step / self.reach_step, 0.0), 1.0)
        if self.schedule == "linear":
            return self.target * progress
        return self.target * (1.0 - (1.0 - progress) ** 3)

    @torch.no_grad()
    def step(self, step: int) -> SparsityReport | None:
        """Apply the policy after optimizer step number `step` (1-based).

        Returns the SparsityReport when this step measured (steps 1, 1 + interval,
        1 + 2·interval, … and `total_steps`), else None.
        """
        if self.policy == "freeze" and self.frozen_scores is not None:
            self.bank.scores.copy_(self.frozen_scores)  # undo the optimizer's update, every step
        if (step - 1) % self.interval and step < self.total_steps:
            return None
        report = sparsity_report(self.model)
        if self.policy == "freeze":
            if self.frozen_scores is None and report.overall >= self.target:
                self.frozen_scores = self.bank.scores.detach().clone()
            return report
        low, high = self.floor(step + self.interval - 1), self.target  # the floor until the next measurement
        if low - self.tolerance <= report.overall <= high + self.tolerance:
            return report
        # up to the floor: round the count up, so a small model never sits a weight below it
        zeros = math.ceil(low * report.numel) if report.overall < low else round(high * report.numel)
        layers = list(sparse_layers(self.model))
        self.bank.scores.add_(shift_for_zeros(layers, self.bank, zeros, torch.float32))
        self.interventions += 1
        return sparsity_report(self.model)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue exactly."""
        return {"frozen_scores": self.frozen_scores, "interventions": self.interventions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        frozen = state["frozen_scores"]
        self.frozen_scores = None if frozen is None else frozen.to(self.bank.scores.device)
        self.interventions = int(state["interventions"])
