"""PyTorch's transformer blocks rewritten so that their Linear layers are called as modules.

In eval mode nn.TransformerEncoderLayer runs `torch._transformer_encoder_layer_fwd` and
nn.MultiheadAttention runs `torch._native_multi_head_attention`: fused kernels that read the
weights of linear1, linear2, out_proj and the bare `in_proj_weight` directly, so none of them
could run by a sparse path. `unfuse_transformers` replaces, in a model it may change (compile_sparse
passes its own copy), every nn.MultiheadAttention by a `SplitAttention`, every
nn.TransformerEncoderLayer by an `UnfusedEncoderLayer` and every nn.TransformerEncoder by an
`UnfusedEncoder`: the same children (the Linear, LayerNorm and Dropout modules move over), the
same results (PyTorch's non-fused path, which computes the same function), every layer called.

Only these exact classes are rewritten; a subclass may have its own forward and is left as it is.
Source of the math: torch/nn/modules/transformer.py (PyTorch 2.x), the slow path of `forward`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.transformer import _detect_is_causal_mask, _get_seq_len

from adapmtl.inference.attention import SplitAttention
from adapmtl.inference.fold import Unfused


def _canonical_masks(src: torch.Tensor, mask: torch.Tensor | None, padding: torch.Tensor | None,
                     names: tuple[str, str]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(mask, padding) as float masks (-inf where a bool mask is True), as PyTorch canonicalises them."""
    padding = F._canonical_mask(mask=padding, mask_name=names[1], other_type=F._none_or_dtype(mask),
                                other_name=names[0], target_type=src.dtype)
    mask = F._canonical_mask(mask=mask, mask_name=names[0], other_type=None, other_name="",
                             target_type=src.dtype, check_other=False)
    return mask, padding


class UnfusedEncoderLayer(Unfused):
    """`layer` (an nn.TransformerEncoderLayer) always on its non-fused path: same call
    (src, src_mask, src_key_padding_mask, is_causal), same output shape as src."""

    def __init__(self, layer: nn.TransformerEncoderLayer) -> None:
        super().__init__()
        self.self_attn, self.linear1, self.linear2 = layer.self_attn, layer.linear1, layer.linear2
        self.dropout, self.dropout1, self.dropout2 = layer.dropout, layer.dropout1, layer.dropout2
        self.norm1, self.norm2, self.norm_first = layer.norm1, layer.norm2, layer.norm_first
        self.activation = layer.activation
        self.train(layer.training)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """The encoder layer's output for `src` (see nn.TransformerEncoderLayer.forward)."""
        src_mask, src_key_padding_mask = _canonical_masks(src, src_mask, src_key_padding_mask,
                                                          ("src_mask", "src_key_padding_mask"))
        x = src
        if self.norm_first:
            x = x + self._attention(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._feed_forward(self.norm2(x))
        x = self.norm1(x + self._attention(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._feed_forward(x))

    def _attention(self, x, mask, padding, is_causal):
        x = self.self_attn(x, x, x, attn_mask=mask, key_padding_mask=padding, need_weights=False,
                           is_causal=is_causal)[0]
        return self.dropout1(x)

    def _feed_forward(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class UnfusedEncoder(Unfused):
    """`encoder` (an nn.TransformerEncoder) with its layers called one after the other as modules:
    same call (src, mask, src_key_padding_mask, is_causal) and output. Where PyTorch would run
    the layers on a nested tensor (eval, batch_first, a left-aligned padding mask and no other
    mask), the padded positions come out as zeros before the final norm, as they do there."""

    def __init__(self, encoder: nn.TransformerEncoder) -> None:
        super().__init__()
        self.layers, self.norm, self.num_layers = encoder.layers, encoder.norm, encoder.num_layers
        self.use_nested_tensor = getattr(encoder, "use_nested_tensor", False)
        self.mask_check = getattr(encoder, "mask_check", True)
        self.train(encoder.training)

    def forward(self, src: torch.Tensor, mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool | None = None) -> torch.Tensor:
        """The encoder's output for `src` (see nn.TransformerEncoder.forward)."""
        mask, padding = _canonical_masks(src, mask, src_key_padding_mask, ("mask", "src_key_padding_mask"))
        zero_padded = self._pytorch_would_nest(src, mask, padding)
        is_causal = _detect_is_causal_mask(mask, is_causal, _get_seq_len(src, self.layers[0].self_attn.batch_first))
        output = src
        for layer in self.layers:
            output = layer(output, src_mask=mask, is_causal=is_causal, src_key_padding_mask=padding)
        if zero_padded:
            output = output.masked_fill(padding.ne(0).unsqueeze(-1), 0.0)
        return self.norm(output) if self.norm is not None else output

    def _pytorch_would_nest(self, src, mask, padding) -> bool:
        """Whether nn.TransformerEncoder.forward would convert `src` to a nested tensor (its conditions)."""
        if not (torch.backends.mha.get_fastpath_enabled() and self.use_nested_tensor and not self.layers[0].training
                and src.dim() == 3 and padding is not None and mask is None and not torch.is_autocast_enabled()
                and src.device.type in ("cpu", "cuda", "xpu")):
            return False
        weights = self.layers[0].parameters()
        if torch.is_grad_enabled() and (src.requires_grad or any(p.requires_grad for p in weights)):
            return False
        return not self.mask_check or bool(torch._nested_tensor_from_mask_left_aligned(src, padding.logical_not()))


REWRITES = {nn.MultiheadAttention: SplitAttention, nn.TransformerEncoderLayer: UnfusedEncoderLayer,
            nn.TransformerEncoder: UnfusedEncoder}


def has_fused_transformers(model: nn.Module) -> bool:
    """Whether `model` holds a block that `unfuse_transformers` rewrites (see REWRITES)."""
    return any(type(module) in REWRITES for module in model.modules())


def unfuse_transformers(model: nn.Module) -> tuple[nn.Module, int]:
    """(`model` with its PyTorch attention and encoder blocks rewritten, how many were rewritten).

    Changes `model` in place (the root itself may be replaced: use the returned module); a module
    shared by several parents stays shared."""
    done: dict[int, tuple[nn.Module, nn.Module]] = {}  # id(original): (original, its replacement)

    def rewrite(module: nn.Module) -> nn.Module:
        if id(module) not in done:
            for name, child in list(module._modules.items()):  # every name: named_children() skips repeats
                new = rewrite(child) if child is not None else None
                if new is not child:
                    setattr(module, name, new)
            done[id(module)] = module, REWRITES[type(module)](module) if type(module) in REWRITES else module
        return done[id(module)][1]

    root = rewrite(model)
    return root, sum(1 for old, new in done.values() if new is not old)
