"""Reloading a saved plan without a dense forward, when nothing has changed since it was checked.

When `compile_sparse` has checked a compiled model against the dense one (`ModelCheck`, on the
example and on the seeded random input), the plan records a fingerprint: the SHA-256 of the model's
weights (every state_dict tensor, with its name, dtype and shape), the SHA-256 of the compiled
model's outputs on the random input, and the thread count. A reload that finds the same weights
and threads rebuilds the paths and runs the compiled model once on that random input: bit-for-bit
the same outputs means the same function that passed the check (the native kernels do not depend
on the thread count; oneDNN may, hence the threads). Anything else (other weights, other threads,
another CPU whose kernels round differently, a model with transformer blocks to rewrite) falls
back to the ordinary check against the dense model, so a reload is never less checked than that.
On Deeplab-ResNet34 this saves the dense forward, about half of a reload's time.
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from adapmtl.inference.check import _leaves


def _update(digest: "hashlib._Hash", name: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)}\0".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy())


def weights_digest(model: nn.Module) -> str:
    """SHA-256 (hex) of every tensor in `model.state_dict()`, in order, with names, dtypes and shapes."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        _update(digest, name, tensor)
    return digest.hexdigest()


def outputs_digest(outputs: Any) -> str:
    """SHA-256 (hex) of a forward's outputs (nested dicts, tuples, dataclasses): tensors by their bytes,
    other values by their repr."""
    digest = hashlib.sha256()
    for name, value in _leaves(outputs, "output"):
        if isinstance(value, torch.Tensor):
            _update(digest, name, value)
        else:
            digest.update(f"{name}={value!r}\0".encode())
    return digest.hexdigest()


def fingerprint(model: nn.Module, checked_outputs: Any) -> dict[str, Any]:
    """The plan's record: {"weights", "outputs" (digests), "threads"}; `checked_outputs`: the compiled
    model's outputs on the check's random input, after they passed the check."""
    return {"weights": weights_digest(model), "outputs": outputs_digest(checked_outputs),
            "threads": torch.get_num_threads()}
