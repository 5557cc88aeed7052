"""Compact sparse export: each pruned weight as a bitmask plus its surviving values.

A safetensors file (format "adapmtl-sparse"). Every floating tensor with two or more
dimensions (the conv and linear weights: what sparsity prunes) named K is stored as
    K::mask    uint8: numpy.packbits of the row-major non-zero pattern (1 = kept),
               deflate-compressed (zlib): at 90 % sparsity the raw bitmask alone costs 1/32
               of the fp32 weights, which with fp16 values would just miss 0.08× the dense file
    K::values  the non-zero values in row-major order, float32 (float16 with `half`)
Every other tensor (biases, BatchNorm, counters) is stored as it is (floats as fp16 with `half`).
Metadata: format, version, sha256 (over every tensor), model (the ModelSpec as JSON), dtype,
and sparse: JSON {K: {"shape": [...], "nnz": n}}. `load_sparse_state` restores the exact dense
tensors (fp32 values bit for bit; fp16 values rounded once) and checks every count.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from adapmtl.export.container import encode_checked, read_checked, write_atomic
from adapmtl.export.errors import ExportError
from adapmtl.export.spec import ModelSpec
from adapmtl.models import MultiTaskModel

SPARSE_FORMAT = "adapmtl-sparse"
MASK, VALUES = "::mask", "::values"


def _is_sparse(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and tensor.dim() >= 2 and tensor.numel() > 0


def encode_sparse(state: Mapping[str, torch.Tensor], spec: ModelSpec, *, half: bool = False) -> bytes:
    """The sparse file's bytes for a finalized state dict (zeros baked in)."""
    dtype = torch.float16 if half else torch.float32
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict] = {}
    for name, value in state.items():
        value = value.detach().cpu()
        if not _is_sparse(value):
            tensors[name] = value.to(dtype) if value.is_floating_point() else value
            continue
        flat = value.float().numpy().reshape(-1)
        kept = flat != 0
        mask = zlib.compress(np.packbits(kept).tobytes(), 9)
        tensors[name + MASK] = torch.frombuffer(bytearray(mask), dtype=torch.uint8)
        tensors[name + VALUES] = torch.from_numpy(flat[kept]).to(dtype)
        layout[name] = {"shape": list(value.shape), "nnz": int(tensors[name + VALUES].numel())}
    metadata = {"model": json.dumps(spec.to_dict()), "dtype": str(dtype).removeprefix("torch."),
                "sparse": json.dumps(layout)}
    return encode_checked(tensors, SPARSE_FORMAT, metadata)


def write_sparse(state: Mapping[str, torch.Tensor], spec: ModelSpec, path: str | Path, *, half: bool = False) -> Path:
    """Write the sparse file for `state` to `path`."""
    return write_atomic(path, encode_sparse(state, spec, half=half))


def load_sparse_state(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelSpec]:
    """(the dense fp32 state dict, the model spec) stored in a sparse file, verified."""
    tensors, metadata = read_checked(path, SPARSE_FORMAT)
    try:
        layout = json.loads(metadata["sparse"])
        spec = ModelSpec.from_dict(json.loads(metadata["model"]), where=str(path))
    except (KeyError, json.JSONDecodeError) as error:
        raise ExportError(f"{path}: damaged metadata ({error!r})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items() if "::" not in k}
    for name, entry in layout.items():
        shape, nnz = entry["shape"], entry["nnz"]
        numel = int(np.prod(shape))
        try:
            mask_bytes, values = tensors[name + MASK], tensors[name + VALUES]
            bits = np.frombuffer(zlib.decompress(mask_bytes.numpy().tobytes()), dtype=np.uint8)
        except (KeyError, zlib.error) as error:
            raise ExportError(f"{path}: weight {name!r}: mask or values missing or damaged ({error!r})") from None
        if bits.size != (numel + 7) // 8:
            raise ExportError(f"{path}: weight {name!r}: mask holds {bits.size * 8} bits, expected {numel} (shape {shape})")
        kept = torch.from_numpy(np.unpackbits(bits, count=numel).astype(bool))
        if int(kept.sum()) != nnz or values.numel() != nnz:
            raise ExportError(f"{path}: weight {name!r}: the mask keeps {int(kept.sum())} weights and "
                              f"{values.numel()} values are stored; the metadata says {nnz}")
        dense = torch.zeros(numel, dtype=torch.float32)
        dense[kept] = values.float()
        state[name] = dense.reshape(shape)
    return state, spec


def load_sparse(path: str | Path) -> MultiTaskModel:
    """The model stored in a sparse file, rebuilt with `create_model`, in eval mode."""
    state, spec = load_sparse_state(path)
    model = spec.build()
    model.load_state_dict(state)
    return model.eval()
