"""Checkpoints written atomically and verified on load.

A checkpoint file is MAGIC, the SHA-256 of the rest, then torch.save's bytes. Written to a
temporary file and renamed, a reader sees the old file or the new one, never half; a byte
changed on disk afterwards is a CheckpointError instead of silently different weights.
Checkpoints from before the checksum (plain torch.save files) still load, with an
UnverifiedCheckpointWarning: refusing them would strand interrupted runs, and the next
save of the run writes the checksum.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from adapmtl.errors import AdapMTLError
from adapmtl.files import write_atomic

MAGIC = b"ADAPMTL-CHECKPOINT-1\n"
DIGEST_SIZE = 32  # SHA-256
TORCH_ZIP = b"PK\x03\x04"  # how every torch.save file (since torch 1.6) starts
# what may differ between a checkpoint's config and the run resuming it: where and how it runs
# (`name` too: a run given only a folder reads its name back from config.yaml's file name)
RESUMABLE_CHANGES = {"name", "out_dir", "data.root", "data.workers", "train.device", "train.progress",
                     "train.dist_timeout"}


class CheckpointError(AdapMTLError, ValueError):
    """A checkpoint is missing, damaged, unreadable, not one of ours, or from another run."""


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint written before checkpoints carried a checksum: it loads, unverified."""


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save `obj` to `path` atomically (see `write_atomic`), with its SHA-256.

    Raises OSError naming `path` if it cannot be written (e.g. a full disk)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    body = buffer.getbuffer()
    write_atomic(path, MAGIC, hashlib.sha256(body).digest(), body)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict `save_atomic` wrote to `path`, after verifying its checksum.

    Raises CheckpointError when the file is missing, damaged (checksum mismatch, e.g. a
    flipped byte or a truncation), unreadable, or not an adapmtl checkpoint. Warns
    UnverifiedCheckpointWarning for a checkpoint from before checksums.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = memoryview(path.read_bytes())
    if data[: len(MAGIC)] == MAGIC:
        digest, body = data[len(MAGIC) : len(MAGIC) + DIGEST_SIZE], data[len(MAGIC) + DIGEST_SIZE :]
        if hashlib.sha256(body).digest() != digest:
            raise CheckpointError(
                f"checkpoint {path} is damaged: its content does not match the SHA-256 recorded when it was "
                f"saved (truncated or changed on disk); restore it from a backup or delete it")
    elif data[: len(TORCH_ZIP)] == TORCH_ZIP:
        warnings.warn(f"checkpoint {path} has no checksum (written by an older adapmtl): it cannot be verified; "
                      f"the run's next checkpoint will have one", UnverifiedCheckpointWarning, stacklevel=2)
        body = data
    else:
        raise CheckpointError(f"checkpoint {path} is unreadable: it is neither an adapmtl checkpoint nor a "
                              f"torch.save file (damaged, or another kind of file)")
    try:
        checkpoint = torch.load(io.BytesIO(body), map_location=map_location, weights_only=False)
    except Exception as error:  # damaged or foreign files raise many kinds of errors
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise CheckpointError(f"{path} is not an adapmtl checkpoint (no 'model' entry)")
    return checkpoint


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """`model.load_state_dict(state)`, where `state` comes from the file at `path` (a checkpoint or model file).

    Raises CheckpointError naming `path` and the first mismatched entries when the state
    does not fit the model (another architecture, width, task set or method); the model is
    then left untouched (load_state_dict would have copied the entries that fit).
    """
    expected = model.state_dict()
    problems = [f"{key} missing" for key in expected if key not in state]
    problems += [f"{key} unexpected" for key in state if key not in expected]
    problems += [f"{key}: shape {tuple(value.shape)} in the checkpoint, {tuple(expected[key].shape)} in the model"
                 for key, value in state.items()  # tensors only: modules' extra states have no shape
                 if isinstance(value, torch.Tensor) and isinstance(expected.get(key), torch.Tensor)
                 and value.shape != expected[key].shape]
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise CheckpointError(f"checkpoint {path} does not fit this run's model (it was written for another "
                              f"architecture, width, task set or method): {shown}")
    model.load_state_dict(state)


def config_differences(saved: Mapping[str, Any] | None, current: Mapping[str, Any],
                       saved_as: str = "checkpoint") -> list[str]:
    """The config keys (dotted) whose values differ between the config a checkpoint (or a run:
    `saved_as` names it) was written with (`saved`; None for checkpoints that did not record it)
    and `current`, as "key: checkpoint VALUE, now VALUE". Keys in RESUMABLE_CHANGES, and keys
    only one side has (fields added or removed by an adapmtl upgrade), are ignored."""
    if saved is None:
        return []
    old, new = _flatten(saved), _flatten(current)
    return [f"{key}: {saved_as} {old[key]!r}, now {new[key]!r}"
            for key in sorted(old.keys() & new.keys()) if key not in RESUMABLE_CHANGES and old[key] != new[key]]


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def rng_state() -> dict[str, Any]:
    """The global RNG states that training consumes (dropout, initialisation)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states `rng_state` returned (CUDA's only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
