"""`lth`: the lottery ticket procedure (Frankle & Carbin, 2019), inside the same budget.

Train dense for `method.pretrain` of `train.steps`, prune globally by magnitude to the
target, rewind every parameter and buffer to its value after step `method.rewind_step`
(0: the initial weights; > 0: "late rewinding"), reset the optimizer's moments and the lr
schedule, and retrain the rest of the budget with the mask fixed. The dense phase is part
of `train.steps`, so the total iterations equal every other method's (`dense_iterations`
says how many of them trained the dense model).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from pydantic import Field

from adapmtl.methods.base import MethodError, MethodOptions
from adapmtl.methods.masks import MaskedMethod
from adapmtl.methods.registry import register_method


class LTHOptions(MethodOptions):
    pretrain: float = Field(0.5, gt=0, lt=1, description="fraction of train.steps trained dense before pruning")
    rewind_step: int = Field(0, ge=0, description="rewind to the weights after this step (0: initial)")


@register_method
class LTH(MaskedMethod):
    name = "lth"
    options_type = LTHOptions

    def prepare(self, model: nn.Module) -> None:
        """Set up the masks. Raises MethodError unless rewind step < pruning step < train.steps,
        ComponentError if the model has no prunable layer."""
        super().prepare(model)
        self.final_step = self.step_at(self.options.pretrain)
        if not self.options.rewind_step < self.final_step < self.steps:
            raise MethodError(f"lth: the rewind step ({self.options.rewind_step}) must come before the pruning step "
                              f"({self.final_step} = method.pretrain × train.steps), which must come before the end")
        self.rewind_state: dict[str, torch.Tensor] | None = None

    @property
    def dense_iterations(self) -> int:
        """Steps trained dense before pruning."""
        return self.final_step

    def _snapshot(self, model: nn.Module) -> None:
        self.rewind_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def begin(self, model: nn.Module) -> None:
        """Store the initial weights to rewind to (with `rewind_step` 0)."""
        if self.options.rewind_step == 0:
            self._snapshot(model)

    def update_masks(self, model: nn.Module, step: int) -> None:
        """Store the weights at the rewind step; at the pruning step prune by magnitude, rewind and
        reset the optimizer. Raises MethodError if no weights were stored to rewind to, or
        if the method was not bound to the engine's context."""
        if step == self.options.rewind_step:
            self._snapshot(model)
        if step == self.final_step:
            if self.rewind_state is None:
                raise MethodError("lth: no weights stored to rewind to (was begin() called on this fresh run?)")
            self.maskset.prune_magnitude(self.options.target)
            model.load_state_dict(self.rewind_state)
            self.require_context().reset_optimizer()
            self.rewind_state = None  # no longer needed; keeps later checkpoints small

    def state_dict(self) -> dict[str, Any]:
        """The masks and the stored rewind weights (None once rewound)."""
        return {**super().state_dict(), "rewind": copy.copy(self.rewind_state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict`. Raises MethodError if the masks' layers differ from the model's."""
        super().load_state_dict(state)
        self.rewind_state = state["rewind"]
