"""A Linear layer with a sparse weight, on a matrix of tokens: the "csr" path of nn.Linear.

The weight is stored by output row (CSR: row_start, columns, values). On float32 CPU inputs the
native kernel (`native.py`, `kernels/sparse_linear.c`) computes y[tokens, out] = x · Wᵀ + b with
the tokens as the vector dimension: each nonzero adds its value times one input feature of a tile
of tokens held in registers. Elsewhere (other dtypes or devices, or no kernel could be built) the
same weight runs as a PyTorch sparse CSR matrix product, the pure-PyTorch fallback.
"""
from __future__ import annotations

import functools
import threading
import warnings

import torch
from torch import nn

from adapmtl.inference import native

# A register tile covers tile_vectors vectors of tokens; its slice of the transposed input
# (in_features × tile_vectors vectors) should stay in the L2 cache while every output row reads it.
# Measured on ViT-Small's layers (384 and 1536 inputs, 197 tokens, 90 %, AVX-512, one core): 3-5
# vectors were best (4: 17-24 G useful multiply-adds/s), 1 or 2 up to 40 % slower, 7-8 slower
# on the 1536-wide input.
TILE_BYTES = 512 * 1024
MAX_TILE_VECTORS = 4


def tile_vectors(in_features: int, lanes: int) -> int:
    """Vectors of tokens per register tile for a layer with `in_features` inputs (see TILE_BYTES)."""
    return max(1, min(MAX_TILE_VECTORS, TILE_BYTES // (4 * max(lanes, 1) * max(in_features, 1))))


_scratch = threading.local()  # per Python thread: the kernel's transposed input, reused by every call


def scratch(floats: int) -> torch.Tensor:
    """A float32 buffer of `floats` elements aligned to 64 bytes, this thread's own, reused from call to call
    (kept while the thread lives, as large as the largest request): a fresh megabyte per call costs page
    faults, which two threads take in turn (measured: a 1536→384 layer at 90 % took 0.6-0.7 ms on two
    threads with a new buffer per call, 0.35 ms with this one)."""
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.numel() < floats + 16:
        buffer = _scratch.buffer = torch.empty(floats + 16, dtype=torch.float32)
    return buffer[(-buffer.data_ptr() % 64) // 4:][:floats]


@functools.cache
def _lanes() -> int:
    library = native.kernels("sparse_linear")
    return library.adapmtl_simd_lanes() if library is not None else 0


class CSRLinear(nn.Module):
    """`layer` (an nn.Linear) with its weight [out, in] kept as its nonzeros by output row.

    Input [..., in_features] → the layer's output [..., out_features], contiguous. Raises
    ValueError if the last dimension of the input is not in_features."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        weight = layer.weight.detach()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        nonzero = weight.ne(0)
        self.register_buffer("row_start", torch.cat([nonzero.new_zeros(1, dtype=torch.int64),
                                                     nonzero.sum(1).cumsum(0)]))
        self.register_buffer("columns", nonzero.nonzero()[:, 1].to(torch.int32))  # row-major: by row, then column
        self.register_buffer("values", weight[nonzero].clone())
        self.register_buffer("bias", layer.bias.detach().clone() if layer.bias is not None else None)

    def dense_weight(self) -> torch.Tensor:
        """The weight [out_features, in_features] rebuilt from the stored nonzeros."""
        weight = self.values.new_zeros(self.out_features, self.in_features)
        rows = torch.arange(self.out_features, device=self.values.device).repeat_interleave(self.row_start.diff())
        weight[rows, self.columns.long()] = self.values
        return weight

    def _pytorch(self, rows: torch.Tensor) -> torch.Tensor:
        """The product by PyTorch's sparse CSR matmul: [tokens, in] → [tokens, out]."""
        with warnings.catch_warnings():  # PyTorch flags CSR as beta on every construction
            warnings.simplefilter("ignore", UserWarning)
            csr = torch.sparse_csr_tensor(self.row_start, self.columns.long(), self.values.to(rows.dtype),
                                          (self.out_features, self.in_features))
        out = (csr @ rows.t()).t()
        if self.bias is not None:
            out = out + self.bias.to(rows.dtype)
        return out.contiguous()

    def _native_applies(self, x: torch.Tensor) -> bool:
        return (x.device.type == "cpu" and x.dtype == torch.float32 and self.values.dtype == torch.float32
                and (self.bias is None or self.bias.dtype == torch.float32)
                and native.kernels("sparse_linear") is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output for `x` [..., in_features]."""
        if x.dim() == 0 or x.shape[-1] != self.in_features:  # checked here: the kernel reads raw memory
            raise ValueError(f"expected input [..., {self.in_features}], got {list(x.shape)}")
        rows = x.reshape(-1, self.in_features)
        if not self._native_applies(x):
            return self._pytorch(rows).reshape(*x.shape[:-1], self.out_features)
        rows = rows.contiguous()
        out = x.new_empty(rows.shape[0], self.out_features)
        if out.numel() == 0:
            return out.reshape(*x.shape[:-1], self.out_features)
        transposed = scratch(self.in_features * native.linear_stride(rows.shape[0]))
        native.sparse_linear(rows, out, self.row_start, self.columns, self.values, self.bias, transposed,
                             tile_vectors(self.in_features, _lanes()))
        return out.reshape(*x.shape[:-1], self.out_features)
