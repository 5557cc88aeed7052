"""The soft-threshold reparameterization Ŵ = sign(W)·relu(|W| − τ) (AdapMTL; docs/method.md §1)."""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable


def soft_threshold(weight: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Return sign(W)·relu(|W| − τ), computed as W − clamp(W, −τ, τ).

    An entry is zero exactly when |W| ≤ τ. Differentiable through plain autograd:
    ∂Ŵ/∂W = 1 where |W| > τ, else 0; ∂Ŵ/∂τ = −sign(W) where |W| > τ, else 0.
    """
    return weight - torch.clamp(weight, -tau, tau)


class _SoftThresholdFunction(torch.autograd.Function):
    """soft_threshold(W, sigmoid(scores[group])) as one autograd node.

    Same values and gradients as plain autograd through `soft_threshold`, but the
    backward reads the saved output Ŵ (which the layer keeps for its own backward
    anyway): alive entries are where Ŵ ≠ 0, and sign(Ŵ) = sign(W) there. That is
    four passes over the weight instead of about eight, and no select/sigmoid nodes
    per layer: the training-step overhead stays small.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, group: int) -> torch.Tensor:
        tau = torch.sigmoid(scores[group])
        out = soft_threshold(weight, tau.to(weight.dtype))
        ctx.save_for_backward(out, tau)
        ctx.group, ctx.num_groups = group, scores.numel()
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        out, tau = ctx.saved_tensors
        grad_weight = grad_scores = None
        if ctx.needs_input_grad[0]:
            grad_weight = torch.where(out != 0, grad_out, 0)
        if ctx.needs_input_grad[1]:
            # dL/dτ = −Σ_alive sign(w)·dL/dŵ  (sign(Ŵ) is 0 where pruned);  dτ/ds = τ(1 − τ)
            grad_tau = -torch.dot(grad_out.reshape(-1), torch.sign(out).reshape(-1))
            grad_scores = tau.new_zeros(ctx.num_groups)
            grad_scores[ctx.group] = grad_tau.to(tau.dtype) * tau * (1 - tau)
        return grad_weight, grad_scores, None


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
        return _SoftThresholdFunction.apply(weight, self.bank.scores, self.group)

    def extra_repr(self) -> str:
        return f"group={self.bank.group_names[self.group]!r}, component={self.component!r}"
