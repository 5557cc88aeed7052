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
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adapmtl.inference import native
from adapmtl.inference.geometry import conv_output_size, inside_taps

_warned: set[str] = set()
# Input channels are taken in blocks so that the input a tile reads stays in the L1 cache
# while every output channel adds its share; each (output channel, block) then reloads its
# partial sums, which pays when it brings about BLOCK_NONZEROS nonzeros. Measured on the
# paper's layer shapes (C512 3x3 at 67 %: 106 ms unblocked, 60 ms in blocks of 32; at 97 %
# blocks only cost), see benchmarks/inference.py.
MIN_BLOCK = 16
BLOCK_NONZEROS = 64
MAX_SIZES_KEPT = 32  # input sizes whose (trimmed) nonzeros a Direct layer keeps at once


class _Nonzeros(NamedTuple):
    """The nonzeros one call of the kernel uses, in its order: all of a Direct layer's, or those of the
    taps that land inside an image of one size (kernel rows and columns [first, last], as a smaller
    kernel with shifted padding)."""
    tap_start: torch.Tensor
    channels: torch.Tensor
    values: torch.Tensor
    kernel_size: tuple[int, int]
    padding: tuple[int, int]  # may be negative: only the arithmetic input = out·stride − padding + tap·dilation matters
    blocks: int


class _SizeEntry(NamedTuple):
    """What a Direct layer keeps for one input size: the identity of its buffers when it was made (their
    addresses and in-place versions: a change means weights loaded or edited since, so it is made again),
    the buffers themselves (held so that no later tensor can be given one of those addresses while the entry
    lives, which would pass for the same buffer), the nonzeros the kernel uses there, its geometry tensor,
    the output's (height, width) and the kernel's constant arguments (`native.conv2d_arguments`)."""
    identity: tuple[int, ...]
    buffers: tuple[torch.Tensor | None, ...]
    nonzeros: _Nonzeros
    geometry: torch.Tensor
    out_size: tuple[int, int]
    arguments: tuple[int | None, ...]


def _starts(counts: torch.Tensor) -> torch.Tensor:
    """Where each (block, out, tap) group begins in the nonzeros, from the groups' sizes, with the end last."""
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class Direct(nn.Module):
    """A Conv2d whose nonzero weights are grouped per (input-channel block, output channel, tap)
    for the native kernel. `block_channels`: input channels per block (default: from the density).

    Input [B, in_channels, H, W] → the layer's output [B, out_channels, H_out, W_out]; float32 on
    CPU runs the native kernel, anything else (or no kernel, with a RuntimeWarning) F.conv2d.
    What it keeps per input size is made again when a buffer is replaced or changed by a PyTorch in-place
    operation (its version counter moves); writes through `.data` or a NumPy view are not seen."""

    def __init__(self, layer: nn.Conv2d, block_channels: int | None = None) -> None:
        super().__init__()
        weight = layer.weight.detach()
        self.in_channels, self.out_channels, self.groups = layer.in_channels, weight.shape[0], layer.groups
        self.kernel_size, self.stride = layer.kernel_size, layer.stride
        self.padding, self.dilation = layer.padding, layer.dilation
        self.fixed_block = block_channels
        tap_start, channels, values, self.block_channels = self._nonzero_order(weight, block_channels)
        self.blocks = -(-self.in_channels // self.block_channels)
        self.register_buffer("tap_start", tap_start)
        self.register_buffer("channels", channels)
        self.register_buffer("values", values)
        bias = layer.bias.detach().clone() if layer.bias is not None else None
        self.register_buffer("bias", bias)
        # [low, high] the output is clamped to (a fused activation, see `adapmtl.inference.activation`); not in
        # the state_dict: compile_sparse fuses again on reload
        self.register_buffer("clamp", None, persistent=False)
        # per input size (height, width): the nonzeros of the taps that land inside the image there (all of
        # them, or a trimmed copy: see `_trimmed`) and what the kernel call needs, made on first sight of a
        # size with the buffers' identity then, so that weights loaded or edited in place since are never
        # served stale
        self._for_size: dict[tuple[int, int], _SizeEntry] = {}

    def _nonzero_order(self, weight: torch.Tensor, block_channels: int | None):
        """(tap_start, channels, values, block_channels) of `weight` [out, in/groups, kh, kw] in the kernel's
        order: grouped by (input-channel block, output channel, tap), see kernels/sparse_conv2d.c."""
        out_channels, group_width, kh, kw = weight.shape
        taps = kh * kw
        nonzeros = int(np.count_nonzero(weight.ne(0).numpy()))  # NumPy: 2-4x faster than torch here
        block_channels = block_channels or self.default_block(self.groups, self.in_channels, out_channels, nonzeros)
        blocks = -(-self.in_channels // block_channels)
        # the nonzeros in the kernel's order (block, out, tap, channel) straight from a permuted view of
        # the weight, [blocks, out, kh, kw, block_channels], zero-padded to whole blocks: no sort needed
        # (an argsort of the nonzeros took most of the build time of the paper models' layers)
        if self.groups > 1:
            ordered = weight.permute(0, 2, 3, 1).unsqueeze(0).contiguous()
        else:  # one strided copy per block into the padded layout (a pad, then a permuted copy, took twice as long)
            ordered = weight.new_empty(blocks, out_channels, kh, kw, block_channels)
            source = weight.permute(0, 2, 3, 1)  # [out, kh, kw, in]
            for b in range(blocks):
                width = min(block_channels, group_width - b * block_channels)
                ordered[b, ..., :width] = source[..., b * block_channels:b * block_channels + width]
                ordered[b, ..., width:] = 0
        mask = ordered != 0
        # one flat nonzero and index arithmetic: boolean indexing of the 5-d tensor was 5x slower
        index = torch.from_numpy(np.flatnonzero(mask.numpy()))
        last = ordered.shape[-1]
        group = index // last  # (block, out, tap), in the kernel's order
        block = group // (out_channels * taps)
        channel = block * block_channels + (index - group * last)  # the absolute input channel
        if self.groups > 1:
            channel += group // taps % out_channels // (out_channels // self.groups) * group_width
        # nonzeros per (block, out, tap); grouped: the blocks past the first stay empty
        tap_start = _starts(torch.bincount(group, minlength=blocks * out_channels * taps))
        return tap_start, channel.to(torch.int32), ordered.flatten()[index], block_channels

    @staticmethod
    def default_block(groups: int, in_channels: int, out_channels: int, nonzeros: int) -> int:
        """Input channels per block: see BLOCK_NONZEROS."""
        if groups > 1 or nonzeros == 0:
            return in_channels
        per_channel = nonzeros / (out_channels * in_channels)  # over all taps
        return int(min(in_channels, max(MIN_BLOCK, -(-BLOCK_NONZEROS // per_channel))))

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

    def fuse_clamp(self, low: float, high: float) -> None:
        """Clamp the output to [low, high] from now on (±inf for no bound), as torch.clamp: the ReLU (0, inf),
        ReLU6 (0, 6) or hardtanh that followed the layer, computed as the kernel stores its output."""
        self.clamp = torch.tensor([low, high], dtype=torch.float32, device=self.values.device)

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        out = F.conv2d(x, self.dense_weight().to(x.dtype), bias, self.stride, self.padding, self.dilation, self.groups)
        return out if self.clamp is None else out.clamp(*self.clamp.tolist())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of `x`. Raises ValueError if `x` is not [B, in_channels, H, W]."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:  # checked here: the kernel reads raw memory
            raise ValueError(f"expected input [batch, {self.in_channels}, height, width], got {list(x.shape)}")
        if x.dtype != torch.float32 or self._buffers["values"].dtype != torch.float32 or x.device.type != "cpu":
            return self._reference(x)
        if native.kernels() is None:
            _warn_once(f"adapmtl: the native sparse kernel is unavailable ({native.status()}); "
                       "the 'direct' path runs as a dense convolution")
            return self._reference(x)
        entry = self.prepare(x)
        out = x.new_empty((x.shape[0], self.out_channels, *entry.out_size))
        if out.numel():
            native.sparse_conv2d(x.contiguous(), out, entry.arguments)
        return out

    def _identity(self) -> tuple[tuple[int, ...], tuple[torch.Tensor | None, ...]]:
        """(the addresses and in-place versions of the buffers the kernel reads, those buffers). Read from
        `_buffers` directly: this runs on every call, and each Module attribute lookup costs about 0.6 µs."""
        buffers = tuple(self._buffers[name] for name in ("tap_start", "channels", "values", "bias", "clamp"))
        identity = []
        for tensor in buffers:
            identity += (tensor.data_ptr(), tensor._version) if tensor is not None else (0, 0)
        return tuple(identity), buffers

    def prepare(self, x: torch.Tensor) -> _SizeEntry:
        """What the kernel call needs for inputs of `x`'s height and width (`_SizeEntry`), made on the first
        call for a size (tens of ms on a large layer whose taps are trimmed) and kept. Timing code calls it
        before the first timed call, so that this one-time cost is not taken for the path's speed."""
        height, width = x.shape[2:]
        identity, buffers = self._identity()
        entry = self._for_size.get((height, width))
        if entry is None or entry.identity != identity:
            out_h, out_w = conv_output_size(self, height, width)
            nonzeros = self._trimmed(height, width, out_h, out_w) or _Nonzeros(
                self.tap_start, self.channels, self.values, self.kernel_size, self.padding, self.blocks)
            geometry = torch.tensor([self.in_channels, height, width, out_h, out_w, *nonzeros.kernel_size,
                                     *self.stride, *nonzeros.padding, *self.dilation, self.out_channels,
                                     nonzeros.blocks], dtype=torch.int64)
            arguments = native.conv2d_arguments(nonzeros.tap_start, nonzeros.channels, nonzeros.values, self.bias,
                                                geometry, self.clamp)
            if len(self._for_size) >= MAX_SIZES_KEPT:  # inputs of ever-new sizes: do not grow without bound
                self._for_size.clear()
            entry = _SizeEntry(identity, buffers, nonzeros, geometry, (max(out_h, 0), max(out_w, 0)), arguments)
            self._for_size[(height, width)] = entry
        return entry

    def _trimmed(self, height: int, width: int, out_h: int, out_w: int) -> _Nonzeros | None:
        """The nonzeros of the taps that see an image of height × width (None where all of them do).
        Why: the kernel skips a tap that sees only padding, but its nonzeros still set the block size
        and its groups are still walked; a 3×3 conv of dilation 12 on an 11×11 map is a 1×1 conv."""
        rows, columns = (inside_taps(*axis) for axis in zip(
            self.kernel_size, self.stride, self.padding, self.dilation, (height, width), (out_h, out_w)))
        if len(rows) * len(columns) in (0, self.kernel_size[0] * self.kernel_size[1]):
            return None  # no tap sees the image (the kernel writes the bias), or all do
        tap_start, channels, values, block_channels = self._taps_only(rows, columns)
        padding = (self.padding[0] - rows.start * self.dilation[0], self.padding[1] - columns.start * self.dilation[1])
        return _Nonzeros(tap_start, channels, values, (len(rows), len(columns)), padding,
                        -(-self.in_channels // block_channels))

    def _taps_only(self, rows: range, columns: range):
        """(tap_start, channels, values, block_channels) of the kernel rows × columns alone, regrouped by
        the blocks their density asks for: from the stored nonzeros, without rebuilding the dense weight."""
        kh, kw = self.kernel_size
        taps = kh * kw
        # per (block, out, tap) group first, then per nonzero: integer division on every nonzero was the cost
        group = torch.arange(len(self.tap_start) - 1)
        tap = group % taps
        row, column = tap // kw - rows.start, tap % kw - columns.start
        kept_group = (row >= 0) & (row < len(rows)) & (column >= 0) & (column < len(columns))
        per_group = self.tap_start.diff()
        kept = torch.repeat_interleave(kept_group, per_group).nonzero().squeeze(1)
        channels, values = self.channels[kept], self.values[kept]
        new_taps = len(rows) * len(columns)
        out_and_tap = (group // taps % self.out_channels * new_taps + row * len(columns) + column)[kept_group]
        out_and_tap = torch.repeat_interleave(out_and_tap, per_group[kept_group])
        block_channels = self.fixed_block or self.default_block(self.groups, self.in_channels, self.out_channels,
                                                                len(kept))
        blocks = -(-self.in_channels // block_channels)
        block = channels.long() // block_channels if self.groups == 1 else torch.zeros_like(out_and_tap)
        key = block * (self.out_channels * new_taps) + out_and_tap
        # stable: within a (block, out, tap) the entries keep their order, by input channel
        order = torch.sort(key, stable=True).indices
        tap_start = _starts(torch.bincount(key, minlength=blocks * self.out_channels * new_taps))
        return tap_start, channels[order], values[order], block_channels
