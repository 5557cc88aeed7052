"""Safetensors files that know what they hold and notice damage.

Every exported safetensors file carries, in its metadata, a `format` name, a format
`version` and a SHA-256 over every tensor's name, dtype, shape and bytes and every other
metadata entry. Reading checks
all three, so a truncated, corrupted or foreign file is an `ExportError` naming the file,
never a silently wrong model.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from adapmtl.errors import ExportError

VERSION = "1"


def checksum(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """SHA-256 (hex) of the metadata entries (but "sha256") and of every tensor's name, dtype,
    shape and raw bytes, in name order."""
    digest = hashlib.sha256()
    digest.update(json.dumps({k: v for k, v in metadata.items() if k != "sha256"}, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def encode_checked(tensors: Mapping[str, torch.Tensor], fmt: str, metadata: Mapping[str, str]) -> bytes:
    """The bytes of a safetensors file holding `tensors` and `metadata` + format, version and checksum.

    `read_checked` verifies them."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {**metadata, "format": fmt, "version": VERSION}
    return save(tensors, metadata={**metadata, "sha256": checksum(tensors, metadata)})


def read_checked(path: str | Path, fmt: str, error: type[Exception] = ExportError
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a file encoded by `encode_checked` with format `fmt`, verified.

    Raises `error` (ExportError by default) naming the file if it is missing, unreadable, of
    another format or version, or fails its checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = dict(file.metadata() or {})
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as failure:
        raise error(f"{path}: not a readable safetensors file, truncated or corrupted ({failure})") from None
    if metadata.get("format") != fmt:
        raise error(f"{path}: expected an {fmt!r} file, found format {metadata.get('format')!r}")
    if metadata.get("version") != VERSION:
        raise error(f"{path}: {fmt} version {metadata.get('version')!r} is not supported (expected {VERSION!r})")
    if checksum(tensors, metadata) != metadata.get("sha256"):
        raise error(f"{path}: checksum mismatch: the file is corrupted (its tensors and metadata do not "
                          f"hash to the SHA-256 recorded when it was written)")
    return tensors, metadata
