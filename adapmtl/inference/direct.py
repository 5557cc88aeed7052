"""The "direct" path: a sparse convolution computed straight from the input, no im2col.

The weight's nonzeros are stored grouped by block of input channels, output channel and
kernel tap; the native
kernel (`native.py`, `kernels/sparse_conv2d.c`) multiplies each nonzero into a tile of
the output held in registers, reading only the input rows and columns the tap really
covers, so multiply-adds with zero padding are skipped too. It serves every Conv2d with
zero padding: any kernel size, stride, dilation, groups (depthwise included) and bias.

On inputs the kernel does not take (not float32 CPU) or where no kernel could be built,
the module still gives the right answer through F.conv2d with the weight rebuilt.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from adapmtl.inference import native
from adapmtl.inference.geometry import conv_output_size

_warned: set[str] = set()
# Input channels are taken in blocks so that the input a tile reads stays in the L1 cache
# while every output channel adds its share; each (output channel, block) then reloads its
# partial sums, which pays when it brings about BLOCK_NONZEROS nonzeros. Measured on the
# paper's layer shapes (C512 3x3 at 67 %: 106 ms unblocked, 60 ms in blocks of 32; at 97 %
# blocks only cost), see benchmarks/inference.py.
MIN_BLOCK = 16
BLOCK_NONZEROS = 64


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class Direct(nn.Module):
    """A Conv2d whose nonzero weights are grouped per (input-channel block, output channel, tap)
    for the native kernel. `block_channels`: input channels per block (default: from the density).

    Input [B, in_channels, H, W] → the layer's output [B, out_channels, H_out, W_out]; float32 on
    CPU runs the native kernel, anything else (or no kernel, with a RuntimeWarning) F.conv2d."""

    def __init__(self, layer: nn.Conv2d, block_channels: int | None = None) -> None:
        super().__init__()
        weight = layer.weight.detach()
        out_channels, group_width, kh, kw = weight.shape
        self.in_channels, self.out_channels, self.groups = layer.in_channels, out_channels, layer.groups
        self.kernel_size, self.stride = layer.kernel_size, layer.stride
        self.padding, self.dilation = layer.padding, layer.dilation
        taps = kh * kw
        nonzeros = int(torch.count_nonzero(weight))
        self.block_channels = block_channels or self.default_block(layer, nonzeros)
        self.blocks = blocks = -(-self.in_channels // self.block_channels)
        # the nonzeros in the kernel's order (block, out, tap, channel) straight from a permuted view of
        # the weight, [blocks, out, kh, kw, block_channels], zero-padded to whole blocks: no sort needed
        # (an argsort of the nonzeros took most of the build time of the paper models' layers)
        width = group_width if self.groups > 1 else blocks * self.block_channels
        if self.groups == 1 and width != group_width:
            weight = F.pad(weight, (0, 0, 0, 0, 0, width - group_width))
        ordered = weight.reshape(out_channels, blocks if self.groups == 1 else 1, -1, kh, kw).permute(1, 0, 3, 4, 2)
        ordered = ordered.contiguous()
        mask = ordered != 0
        # one flat nonzero and index arithmetic: boolean indexing of the 5-d tensor was 5x slower
        index = mask.flatten().nonzero().squeeze(1)
        last = ordered.shape[-1]
        group = index // last  # (block, out, tap), in the kernel's order
        block, out = group // (out_channels * taps), group // taps % out_channels
        channel = block * self.block_channels + index % last  # the absolute input channel
        if self.groups > 1:
            channel += out // (out_channels // self.groups) * group_width
        counts = mask.sum(-1, dtype=torch.int64).flatten()  # nonzeros per (block, out, tap)
        counts = F.pad(counts, (0, blocks * out_channels * taps - len(counts)))  # grouped: blocks past the first empty
        self.register_buffer("tap_start", torch.cat([counts.new_zeros(1), counts.cumsum(0)]))
        self.register_buffer("channels", channel.to(torch.int32))
        self.register_buffer("values", ordered.flatten()[index])
        bias = layer.bias.detach().clone() if layer.bias is not None else None
        self.register_buffer("bias", bias)

    @staticmethod
    def default_block(layer: nn.Conv2d, nonzeros: int) -> int:
        """Input channels per block: see BLOCK_NONZEROS."""
        if layer.groups > 1 or nonzeros == 0:
            return layer.in_channels
        per_channel = nonzeros / (layer.out_channels * layer.in_channels)  # over all taps
        return int(min(layer.in_channels, max(MIN_BLOCK, -(-BLOCK_NONZEROS // per_channel))))

    @staticmethod
    def applies(layer: nn.Module) -> bool:
        """Conv2d layers with zero padding given as numbers (not 'same'), float32 weights."""
        return (isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros" and isinstance(layer.padding, tuple)
                and layer.weight.dtype == torch.float32)

    @staticmethod
    def worth_timing(layer: nn.Module) -> bool:
        """Wherever the native kernel built, sparse weight or not: skipping zero padding pays
        on its own (large dilations on small maps)."""
        return native.kernels() is not None

    def dense_weight(self) -> torch.Tensor:
        """The weight [out, in/groups, kh, kw] rebuilt from the stored nonzeros."""
        kh, kw = self.kernel_size
        taps, group_width = kh * kw, self.in_channels // self.groups
        weight = torch.zeros(self.out_channels, kh * kw, group_width, dtype=self.values.dtype, device=self.values.device)
        group = torch.repeat_interleave(torch.arange(len(self.tap_start) - 1, device=self.values.device),
                                        self.tap_start.diff())
        out, tap = group // taps % self.out_channels, group % taps
        column = self.channels.long() - out // (self.out_channels // self.groups) * group_width
        weight[out, tap, column] = self.values
        return weight.reshape(self.out_channels, kh, kw, group_width).permute(0, 3, 1, 2)

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.conv2d(x, self.dense_weight().to(x.dtype), bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of `x`. Raises ValueError if `x` is not [B, in_channels, H, W]."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:  # checked here: the kernel reads raw memory
            raise ValueError(f"expected input [batch, {self.in_channels}, height, width], got {list(x.shape)}")
        if x.device.type != "cpu" or x.dtype != torch.float32 or self.values.dtype != torch.float32:
            return self._reference(x)
        if native.kernels() is None:
            _warn_once(f"adapmtl: the native sparse kernel is unavailable ({native.status()}); "
                       "the 'direct' path runs as a dense convolution")
            return self._reference(x)
        height, width = x.shape[2:]
        out_h, out_w = conv_output_size(self, height, width)
        out = x.new_empty(x.shape[0], self.out_channels, max(out_h, 0), max(out_w, 0))
        if out.numel() == 0:
            return out
        geometry = torch.tensor([self.in_channels, height, width, out_h, out_w, *self.kernel_size, *self.stride,
                                 *self.padding, *self.dilation, self.out_channels, self.blocks], dtype=torch.int64)
        native.sparse_conv2d(x.contiguous(), out, self.tap_start, self.channels, self.values, self.bias, geometry)
        return out
