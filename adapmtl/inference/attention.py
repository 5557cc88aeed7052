"""nn.MultiheadAttention with its projections as four Linear layers that `compile_sparse` can replace.

PyTorch's attention never calls a module for its input projection: `in_proj_weight` [3E, E]
is a bare Parameter, and `out_proj` is read through its weight by
`F.multi_head_attention_forward` (or by the fused `torch._native_multi_head_attention` in eval
mode). `SplitAttention` computes the same function with `q_proj`, `k_proj`, `v_proj` and
`out_proj` called as nn.Linear modules; the attention itself follows PyTorch's own slow path
step by step (masks, bias_k/bias_v, add_zero_attn, unbatched inputs, need_weights). Source of the
math: torch.nn.functional.multi_head_attention_forward (PyTorch 2.x).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from adapmtl.inference.fold import Unfused


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A Linear layer holding copies of `weight` [out, in] and `bias` [out] (same dtype, device, requires_grad)."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    layer.weight = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)
    return layer


class SplitAttention(Unfused):
    """`attention` (an nn.MultiheadAttention) with q/k/v/out projections as Linear layers.

    Same call and results as nn.MultiheadAttention.forward: (query, key, value, key_padding_mask,
    need_weights, attn_mask, average_attn_weights, is_causal) → (output, weights or None), shapes as
    there ([batch, tokens, embed_dim] with batch_first, else [tokens, batch, embed_dim]; unbatched
    [tokens, embed_dim]). Raises what PyTorch raises for bad masks (RuntimeError, AssertionError)."""

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        self.embed_dim, self.kdim, self.vdim = attention.embed_dim, attention.kdim, attention.vdim
        self.num_heads, self.head_dim = attention.num_heads, attention.head_dim
        self.batch_first, self.dropout = attention.batch_first, attention.dropout
        self.add_zero_attn = attention.add_zero_attn
        self.bias_k, self.bias_v = attention.bias_k, attention.bias_v
        if attention._qkv_same_embed_dim:
            weights = attention.in_proj_weight.chunk(3)
        else:
            weights = attention.q_proj_weight, attention.k_proj_weight, attention.v_proj_weight
        biases = attention.in_proj_bias.chunk(3) if attention.in_proj_bias is not None else (None,) * 3
        self.q_proj, self.k_proj, self.v_proj = (_linear(w, b) for w, b in zip(weights, biases))
        self.out_proj = attention.out_proj
        self.train(attention.training)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The attention output and, with need_weights, the attention weights (see the class)."""
        batched = query.dim() == 3
        key_padding_mask = F._canonical_mask(mask=key_padding_mask, mask_name="key_padding_mask",
                                             other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
                                             target_type=query.dtype)
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint.")
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None  # scaled_dot_product_attention applies the causal mask itself
        else:
            attn_mask = F._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                                          target_type=query.dtype, check_other=False)
            is_causal = is_causal and key_padding_mask is None
        if not batched:  # a batch of one, squeezed again at the end
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            key_padding_mask = key_padding_mask.unsqueeze(0) if key_padding_mask is not None else None
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        output, weights = self._attend(query, key, value, key_padding_mask, need_weights, attn_mask,
                                       average_attn_weights, is_causal)
        if not batched:
            return output.squeeze(1), weights.squeeze(0) if weights is not None else None
        return (output.transpose(0, 1) if self.batch_first else output), weights

    def _attend(self, query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal):
        """F.multi_head_attention_forward from the in-projection on, for [tokens, batch, features] inputs."""
        tgt_len, batch, _ = query.shape
        heads, head_dim = self.num_heads, self.head_dim
        q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        if attn_mask is not None:
            expected = (tgt_len, key.shape[0]) if attn_mask.dim() == 2 else (batch * heads, tgt_len, key.shape[0])
            if tuple(attn_mask.shape) != expected:
                raise RuntimeError(f"The shape of the attn_mask is {tuple(attn_mask.shape)}, but should be {expected}.")
            attn_mask = attn_mask.unsqueeze(0) if attn_mask.dim() == 2 else attn_mask
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.repeat(1, batch, 1)])
            v = torch.cat([v, self.bias_v.repeat(1, batch, 1)])
            attn_mask, key_padding_mask = _pad_one(attn_mask), _pad_one(key_padding_mask)
        q = q.reshape(tgt_len, batch * heads, head_dim).transpose(0, 1)
        k = k.reshape(k.shape[0], batch * heads, head_dim).transpose(0, 1)
        v = v.reshape(v.shape[0], batch * heads, head_dim).transpose(0, 1)
        if self.add_zero_attn:
            zeros = k.new_zeros(batch * heads, 1, head_dim)
            k, v = torch.cat([k, zeros], dim=1), torch.cat([v, zeros], dim=1)
            attn_mask, key_padding_mask = _pad_one(attn_mask), _pad_one(key_padding_mask)
        src_len = k.shape[1]
        if key_padding_mask is not None:
            if tuple(key_padding_mask.shape) != (batch, src_len):
                raise AssertionError(f"expecting key_padding_mask shape of {(batch, src_len)}, "
                                     f"but got {tuple(key_padding_mask.shape)}")
            key_padding_mask = key_padding_mask.view(batch, 1, 1, src_len).expand(-1, heads, -1, -1)
            key_padding_mask = key_padding_mask.reshape(batch * heads, 1, src_len)
            attn_mask = key_padding_mask if attn_mask is None else attn_mask + key_padding_mask
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            scores = q * math.sqrt(1.0 / head_dim)
            scores = (torch.baddbmm(attn_mask, scores, k.transpose(-2, -1)) if attn_mask is not None
                      else torch.bmm(scores, k.transpose(-2, -1)))
            weights = F.softmax(scores, dim=-1)
            if dropout > 0.0:
                weights = F.dropout(weights, p=dropout)
            output = torch.bmm(weights, v).transpose(0, 1).reshape(tgt_len * batch, self.embed_dim)
            output = self.out_proj(output).view(tgt_len, batch, -1)
            weights = weights.view(batch, heads, tgt_len, src_len)
            return output, weights.mean(dim=1) if average_attn_weights else weights
        if attn_mask is not None:
            attn_mask = (attn_mask.unsqueeze(0) if attn_mask.shape[0] == 1
                         else attn_mask.view(batch, heads, -1, src_len))
        q, k, v = (t.reshape(batch, heads, -1, head_dim) for t in (q, k, v))
        output = F.scaled_dot_product_attention(q, k, v, attn_mask, dropout, is_causal)
        output = output.permute(2, 0, 1, 3).reshape(batch * tgt_len, self.embed_dim)
        return self.out_proj(output).view(tgt_len, batch, -1), None


def _pad_one(mask: torch.Tensor | None) -> torch.Tensor | None:
    """`mask` with one more (unmasked) key at the end, as PyTorch pads it for bias_k and add_zero_attn."""
    return F.pad(mask, (0, 1)) if mask is not None else None
