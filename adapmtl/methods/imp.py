"""`imp`: iterative magnitude pruning, global over the prunable weights.

The first `method.prune_start` of `train.steps` trains dense; `method.rounds` prune/fine-tune
rounds follow, evenly spaced up to `method.reach_at`, each to an exact count of zeros; the
rest of the budget fine-tunes with the final mask fixed.
"""
from __future__ import annotations

from torch import nn

from pydantic import Field

from adapmtl.methods.base import MethodError, MethodOptions, ReachAt, Steps
from adapmtl.methods.masks import MaskedMethod
from adapmtl.methods.registry import register_method


class IMPOptions(MethodOptions):
    prune_start: float = Field(0.25, ge=0, lt=1, description="first pruning, as a fraction of train.steps")
    reach_at: ReachAt = 2 / 3
    rounds: Steps = Field(3, description="prune/fine-tune rounds to the target")


@register_method
class IMP(MaskedMethod):
    """Iterative magnitude pruning: `method.rounds` prune/fine-tune rounds, evenly spaced
    from `prune_start` to `reach_at`; round r prunes to 1 − (1 − target)^(r/R), so every
    round removes the same fraction of the surviving weights."""

    name = "imp"
    options_type = IMPOptions

    def prepare(self, model: nn.Module) -> None:
        """Set up the masks and the rounds. Raises MethodError if `prune_start` is not at step 1
        or later and before `reach_at`, ComponentError if the model has no prunable layer."""
        super().prepare(model)
        first, last = self.step_at(self.options.prune_start), self.step_at(self.options.reach_at)
        if not 1 <= first <= last:
            raise MethodError(f"imp: method.prune_start ({self.options.prune_start}) must come before "
                              f"method.reach_at ({self.options.reach_at}) and after step 1")
        rounds = self.options.rounds
        self.schedule = {
            round(first + (last - first) * r / max(1, rounds - 1)): 1 - (1 - self.options.target) ** ((r + 1) / rounds)
            for r in range(rounds)
        }
        self.final_step = max(self.schedule)

    @property
    def dense_iterations(self) -> int:
        """Steps before the first round."""
        return min(self.schedule)

    def update_masks(self, model: nn.Module, step: int) -> None:
        """Prune by magnitude to the round's sparsity at a round's step."""
        if step in self.schedule:
            self.maskset.prune_magnitude(self.options.target if step == self.final_step else self.schedule[step])
