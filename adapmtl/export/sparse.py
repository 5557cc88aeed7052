"""Compact sparse export: each pruned weight as a bitmask plus its surviving values.

A safetensors file (format "adapmtl-sparse"). Every floating tensor with two or more
dimensions (the conv and linear weights: what sparsity prunes) is removed from the state dict
and stored, in state-dict order, in two tensors:
    __sparse__::masks   uint8: each weight's row-major non-zero pattern packed with numpy.packbits
                        (1 = kept; each weight starts on a byte), all weights concatenated, then
                        deflate-compressed (zlib). The raw bitmask costs 1/32 of the fp32 weights: at
                        90 % sparsity with fp16 values that alone would just miss 0.08x the dense file
    __sparse__::values  the non-zero values of every weight, row-major, concatenated: float32
                        (float16 with `half`)
Two tensors instead of two per layer also keep the safetensors header small, which matters for
small models. Every other tensor (biases, BatchNorm, counters) is stored as it is (floats as fp16
with `half`). Metadata: format, version, sha256 (over every tensor), model (the ModelSpec as
JSON), dtype, and sparse: JSON [[name, shape, nnz], ...]. `load_sparse_state` restores the exact
dense tensors (fp32 values bit for bit; fp16 values rounded once) and checks every count.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from adapmtl.container import encode_checked, read_checked
from adapmtl.files import write_atomic
from adapmtl.errors import ExportError
from adapmtl.models.spec import ModelSpec

SPARSE_FORMAT = "adapmtl-sparse"
MASKS, VALUES = "__sparse__::masks", "__sparse__::values"


def _is_sparse(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and tensor.dim() >= 2 and tensor.numel() > 0


def encode_sparse(state: Mapping[str, torch.Tensor], spec: ModelSpec, *, half: bool = False) -> bytes:
    """The sparse file's bytes for a finalized state dict (zeros baked in).

    Raises ExportError with `half` if a value exceeds fp16's range (65504), naming the tensors."""
    dtype = torch.float16 if half else torch.float32
    if half:
        too_big = [k for k, v in state.items() if v.is_floating_point() and v.numel() and v.abs().max() > 65504]
        if too_big:
            raise ExportError(f"fp16 cannot hold values above 65504 found in {too_big}; export without --half")
    tensors: dict[str, torch.Tensor] = {}
    layout, masks, values = [], [], []
    for name, value in state.items():
        value = value.detach().cpu()
        if not _is_sparse(value):
            tensors[name] = value.to(dtype) if value.is_floating_point() else value
            continue
        flat = value.float().numpy().reshape(-1)
        kept = flat != 0
        masks.append(np.packbits(kept))
        values.append(flat[kept])
        layout.append([name, list(value.shape), int(kept.sum())])
    packed = zlib.compress(np.concatenate(masks).tobytes() if masks else b"", 9)
    tensors[MASKS] = torch.frombuffer(bytearray(packed), dtype=torch.uint8)
    tensors[VALUES] = torch.from_numpy(np.concatenate(values) if values else np.zeros(0, np.float32)).to(dtype)
    metadata = {"model": json.dumps(spec.to_dict()), "dtype": str(dtype).removeprefix("torch."),
                "sparse": json.dumps(layout)}
    return encode_checked(tensors, SPARSE_FORMAT, metadata)


def write_sparse(state: Mapping[str, torch.Tensor], spec: ModelSpec, path: str | Path, *, half: bool = False) -> Path:
    """Write the sparse file for `state` to `path`. Raises ExportError as `encode_sparse` does;
    OSError if `path` cannot be written."""
    return write_atomic(path, encode_sparse(state, spec, half=half))


def load_sparse_state(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelSpec]:
    """(the dense fp32 state dict, the model spec) stored in a sparse file, verified.

    Raises ExportError naming the file if it is missing, damaged, not a sparse export, or its
    masks and values disagree with its metadata; ModelError if its spec is invalid."""
    tensors, metadata = read_checked(path, SPARSE_FORMAT)
    try:
        layout = json.loads(metadata["sparse"])
        spec = ModelSpec.from_dict(json.loads(metadata["model"]), where=str(path))
        bits = np.frombuffer(zlib.decompress(tensors.pop(MASKS).numpy().tobytes()), dtype=np.uint8)
        values = tensors.pop(VALUES).float()
    except (KeyError, json.JSONDecodeError, zlib.error) as error:
        raise ExportError(f"{path}: damaged sparse payload or metadata ({error!r})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    bit_at = value_at = 0
    for name, shape, nnz in layout:
        numel = int(np.prod(shape))
        nbytes = (numel + 7) // 8
        kept = torch.from_numpy(np.unpackbits(bits[bit_at:bit_at + nbytes], count=numel).astype(bool))
        if kept.numel() != numel or int(kept.sum()) != nnz or value_at + nnz > values.numel():
            raise ExportError(f"{path}: weight {name!r} (shape {shape}): the mask or values do not match "
                              f"the {nnz} non-zeros the metadata records")
        dense = torch.zeros(numel, dtype=torch.float32)
        dense[kept] = values[value_at:value_at + nnz]
        state[name] = dense.reshape(shape)
        bit_at, value_at = bit_at + nbytes, value_at + nnz
    if bit_at != bits.size or value_at != values.numel():
        raise ExportError(f"{path}: {bits.size - bit_at} mask bytes and {values.numel() - value_at} values left "
                          "over after the last weight: the metadata does not describe this payload")
    return state, spec


def load_sparse(path: str | Path) -> nn.Module:
    """The model stored in a sparse file, rebuilt from its spec (a registered model or the factory it names: `ModelSpec.build`), in eval mode.

    Raises ExportError or ModelError as `load_sparse_state` does."""
    state, spec = load_sparse_state(path)
    model = spec.build()
    model.load_state_dict(state)
    return model.eval()
