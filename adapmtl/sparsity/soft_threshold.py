"""The soft-threshold reparameterization Ŵ = sign(W)·relu(|W| − τ) (REFERENCE §2)."""
from __future__ import annotations

import torch
from torch import nn


def soft_threshold(weight: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Return sign(W)·relu(|W| − τ), computed as W − clamp(W, −τ, τ).

    The clamp form is two elementwise ops instead of five, and autograd gives
    exactly the gradients of the method: ∂Ŵ/∂W = 1 where |W| > τ and 0 elsewhere;
    ∂Ŵ/∂τ = −sign(W) where |W| > τ. An entry is zero exactly when |W| ≤ τ.
    """
    return weight - torch.clamp(weight, -tau, tau)


class SoftThreshold(nn.Module):
    """A `torch.nn.utils.parametrize` parametrization of one layer's weight.

    It holds no parameters: the threshold score lives in the model's single
    `ThresholdBank`, shared by every layer of the same group. The bank is held as a
    plain reference, not a child module, so it is registered (and saved) once.
    """

    def __init__(self, bank: nn.Module, group: int, component: str) -> None:
        super().__init__()
        object.__setattr__(self, "bank", bank)
        self.group = group
        self.component = component

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        tau = torch.sigmoid(self.bank.scores[self.group]).to(weight.dtype)
        return soft_threshold(weight, tau)

    def extra_repr(self) -> str:
        return f"group={self.bank.group_names[self.group]!r}, component={self.component!r}"
