"""`snip`: single-shot pruning at initialisation by connection sensitivity (Lee et al., 2019).

Before the first step, the sensitivity |∂L/∂m · w| = |g · w| of every prunable weight is
computed from the gradient g of the summed task losses, accumulated over the first
`method.importance_batches` training batches; the weights with the highest sensitivity
are kept (one global ranking, exact count), and training runs with the mask fixed.
"""
from __future__ import annotations

from pydantic import Field
from torch import nn

from adapmtl.methods.importance import loss_gradients
from adapmtl.methods.base import MethodOptions, Steps
from adapmtl.methods.masks import MaskedMethod
from adapmtl.methods.registry import register_method


class ImportanceOptions(MethodOptions):
    """Options of the methods that score weights on training batches (snip, disparse_*)."""

    importance_batches: Steps = Field(10, description="training batches that score importance")


@register_method
class SNIP(MaskedMethod):
    name = "snip"
    options_type = ImportanceOptions

    def begin(self, model: nn.Module) -> None:
        """Score every prunable weight on the first training batches and fix the mask at the target.

        Raises MethodError if the method was not bound to the engine's context."""
        grads = loss_gradients(model, self.maskset, self.require_context(), 0, self.options.importance_batches,
                               per_task=False)["all"]
        weights = self.maskset.weights()
        scores = {n: (g * weights[n].detach()).abs() for n, g in grads.items()}
        self.maskset.keep_top(scores, self.maskset.numel - self.maskset.zeros_for(self.options.target))
