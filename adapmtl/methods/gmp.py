"""`gmp`: gradual magnitude pruning with the cubic schedule of Zhu & Gupta (2017).

Dense until `method.prune_start`, then global magnitude pruning every `method.update_every`
steps along the cubic schedule to the target at `method.reach_at`; the rest of the budget
fine-tunes with the final mask fixed. (Zhu & Gupta prune each layer to the same sparsity;
we rank globally, like every other mask method here, so the allocation is the data's.)
"""
from __future__ import annotations

from torch import nn

from pydantic import Field

from adapmtl.methods.base import MethodError, MethodOptions, ReachAt, Steps
from adapmtl.methods.masks import MaskedMethod
from adapmtl.methods.registry import register_method


class GMPOptions(MethodOptions):
    prune_start: float = Field(0.25, ge=0, lt=1, description="first pruning, as a fraction of train.steps")
    reach_at: ReachAt = 2 / 3
    update_every: Steps = Field(50, description="steps between mask updates")


@register_method
class GMP(MaskedMethod):
    """Gradual magnitude pruning (Zhu & Gupta, 2017): every `method.update_every` steps from
    `prune_start` to `reach_at`, prune to s_t = s_f · (1 − (1 − (t − t0)/(t1 − t0))³)."""

    name = "gmp"
    options_type = GMPOptions

    def prepare(self, model: nn.Module) -> None:
        """Set up the masks and the schedule. Raises MethodError if `prune_start` does not come
        before `reach_at` in steps, ComponentError if the model has no prunable layer."""
        super().prepare(model)
        self.first, self.final_step = self.step_at(self.options.prune_start), self.step_at(self.options.reach_at)
        if not self.first < self.final_step:
            raise MethodError(f"gmp: method.prune_start ({self.options.prune_start}) must come before "
                              f"method.reach_at ({self.options.reach_at})")

    @property
    def dense_iterations(self) -> int:
        """Steps before the first pruning."""
        return self.first

    def sparsity_at(self, step: int) -> float:
        """The cubic schedule's sparsity after `step`."""
        progress = min(1.0, max(0.0, (step - self.first) / (self.final_step - self.first)))
        return self.options.target * (1 - (1 - progress) ** 3)

    def update_masks(self, model: nn.Module, step: int) -> None:
        """Prune by magnitude to `sparsity_at(step)` when an update is due."""
        due = (step - self.first) % self.options.update_every == 0 or step == self.final_step
        if self.first <= step <= self.final_step and due:
            self.maskset.prune_magnitude(self.sparsity_at(step))
