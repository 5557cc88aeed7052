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
    """soft_threshold(W, min(sigmoid(scores[group]), caps[layer])) as one autograd node.

    The cap is the layer's collapse guard (`adapmtl.sparsity.guard`): where it binds, the
    layer's threshold no longer depends on the score, so the layer adds nothing to ∂L/∂s.

    Same values and gradients as plain autograd through `soft_threshold`, but the
    backward reads the saved output Ŵ (which the layer keeps for its own backward
    anyway): alive entries are where Ŵ ≠ 0, and sign(Ŵ) = sign(W) there. That is
    four passes over the weight instead of about eight, and no select/sigmoid nodes
    per layer: the training-step overhead stays small.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, group: int, caps: torch.Tensor,
                layer: int) -> torch.Tensor:
        tau = torch.sigmoid(scores[group])
        cap = caps[layer].to(tau.dtype)
        out = soft_threshold(weight, torch.minimum(tau, cap).to(weight.dtype))
        ctx.save_for_backward(out, tau, cap)
        ctx.group, ctx.num_groups = group, scores.numel()
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        out, tau, cap = ctx.saved_tensors
        grad_weight = grad_scores = None
        if ctx.needs_input_grad[0]:
            grad_weight = torch.where(out != 0, grad_out, 0)
        if ctx.needs_input_grad[1]:
            # dL/dτ = −Σ_alive sign(w)·dL/dŵ  (sign(Ŵ) is 0 where pruned);  dτ/ds = τ(1 − τ)
            grad_tau = -torch.dot(grad_out.reshape(-1), torch.sign(out).reshape(-1))
            grad_scores = tau.new_zeros(ctx.num_groups)
            free = (tau <= cap).to(tau.dtype)  # 0 where the guard's cap sets the threshold instead
            grad_scores[ctx.group] = grad_tau.to(tau.dtype) * tau * (1 - tau) * free
        return grad_weight, grad_scores, None, None, None


class SoftThreshold(nn.Module):
    """A `torch.nn.utils.parametrize` parametrization of one layer's weight.

    It holds no parameters: the threshold score lives in the model's single
    `ThresholdBank`, shared by every layer of the same group. The bank is held as a
    plain reference, not a child module, so it is registered (and saved) once.
    """

    def __init__(self, bank: nn.Module, group: int, component: str, layer: int,
                 order: tuple[str, ...] = ()) -> None:
        """`order`: the layer's parameter names before sparsify, so that finalize restores their order."""
        super().__init__()
        object.__setattr__(self, "bank", bank)
        self.group = group
        self.component = component
        self.layer = layer  # this layer's entry in bank.caps
        self.order = order

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _SoftThresholdFunction.apply(weight, self.bank.scores, self.group, self.bank.caps, self.layer)

    def extra_repr(self) -> str:
        return f"group={self.bank.group_names[self.group]!r}, component={self.component!r}"
