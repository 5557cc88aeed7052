"""`random`: a sanity floor. A uniformly random mask at the target (exact count), drawn
at initialisation from the run's seed, fixed for the whole training."""
from __future__ import annotations

import torch
from torch import nn

from adapmtl.methods.masks import MaskedMethod
from adapmtl.methods.registry import register_method


@register_method
class Random(MaskedMethod):
    name = "random"

    def begin(self, model: nn.Module) -> None:
        """Draw the random mask at the target (exact count) from the global torch RNG."""
        scores = {n: torch.rand(w.shape, dtype=torch.float64).to(w.device) for n, w in self.maskset.weights().items()}
        self.maskset.keep_top(scores, self.maskset.numel - self.maskset.zeros_for(self.options.target))
