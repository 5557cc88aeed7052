"""ONNX export of a finalized model, checked against PyTorch with onnxruntime.

`model.onnx` takes `image` [B, 3, H, W] (float32, normalised as in training; B is dynamic)
and returns the model's outputs, named after them: a forward that returns a dict gives one output
per key, in its order (a multitask model: one per task, in head order); a tuple or list gives
the spec's task names when there is one output per task, else output0, output1, ...; a lone
tensor gives the one task's name, else "output". A sidecar
`model.onnx.json` records the SHA-256 of the file, the model spec, the input size used for the
check and the largest absolute difference found; `onnx_session` verifies the checksum.
"""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from adapmtl.files import write_atomic
from adapmtl.errors import ExportError
from adapmtl.models.spec import ModelSpec


def _flatten(outputs: object, name: str) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of every tensor in nested dicts, tuples and lists, depth first; nested names
    join with dots ("aux.0"). Raises ExportError for any other value."""
    if isinstance(outputs, torch.Tensor):
        return [(name, outputs)]
    if isinstance(outputs, Mapping):
        items = [(str(key), value) for key, value in outputs.items()]
    elif isinstance(outputs, (tuple, list)):
        items = [(str(index), value) for index, value in enumerate(outputs)]
    else:
        raise ExportError(f"the model's output {name or 'itself'} is a {type(outputs).__name__}; ONNX export needs "
                          "tensors, in dicts, tuples or lists")
    return [leaf for key, value in items for leaf in _flatten(value, f"{name}.{key}" if name else key)]


def output_names(outputs: object, tasks: Sequence[str]) -> list[str]:
    """The ONNX output names of a forward result (see the module doc): a dict's keys (a nested value's
    as "key.0", "key.name"), the tasks for a tuple or list of one tensor per task (else output0, ...),
    the one task for a tensor (else "output"). Raises ExportError for a value that is not a tensor."""
    if isinstance(outputs, Mapping):
        return [name for name, _ in _flatten(outputs, "")]
    if isinstance(outputs, (tuple, list)) and len(outputs) == len(tasks) and \
            all(isinstance(o, torch.Tensor) for o in outputs):
        return list(tasks)
    if isinstance(outputs, torch.Tensor):
        return list(tasks) if len(tasks) == 1 else ["output"]
    return [f"output{name}" for name, _ in _flatten(outputs, "")]


class _Flat(nn.Module):
    """The model with its outputs flattened to a tuple of tensors (ONNX outputs are positional), in
    the order of `output_names`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(tensor for _, tensor in _flatten(self.model(image), ""))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


EXPORTER_LOGGER = "torch.onnx._internal.exporter._registration"  # logs a line per missing torchvision op


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Only errors from the logger `name` while the block runs."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def write_onnx(model: nn.Module, spec: ModelSpec, path: str | Path, input_size: Sequence[int],
               *, opset: int = 18, batch: int = 2, seed: int = 0) -> tuple[Path, float]:
    """Export `model` (eval mode) to `path` with torch.onnx (torch.export-based exporter), run the
    file with onnxruntime on a seeded random batch of `input_size` (H, W), compare every output
    with PyTorch's (rtol 1e-4, atol 1e-4 × the output's scale) and return (path, max |difference|).
    Raises ExportError if the export fails, onnxruntime cannot load the file, or an output differs
    beyond tolerance; OSError if `path` cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = _Flat(model.eval()).eval()
    image = torch.randn(batch, 3, *input_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        names = output_names(model(image), list(spec.tasks))
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings(), _quiet(EXPORTER_LOGGER):
        warnings.simplefilter("ignore")  # the exporter's chatter about optional torchvision ops and deprecations
        try:
            torch.onnx.export(wrapped, (image,), str(tmp), input_names=["image"], output_names=names,
                              opset_version=opset, dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        except Exception as error:  # the exporter raises many types; say which model and why
            tmp.unlink(missing_ok=True)
            raise ExportError(f"ONNX export of {spec.name} failed: {error}") from error
    try:
        max_diff = check_onnx(tmp, wrapped, image)  # checked before it takes the file's name
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    sidecar = {"sha256": _sha256(path), "model": spec.to_dict(), "inputs": {"image": ["batch", 3, *input_size]},
               "outputs": names, "opset": opset, "max_abs_diff": max_diff}
    write_atomic(path.with_name(path.name + ".json"), (json.dumps(sidecar, indent=2) + "\n").encode())
    return path, max_diff


def onnx_session(path: str | Path):
    """An onnxruntime InferenceSession (CPU) for an exported file, after verifying its checksum
    against the sidecar `<file>.json` written at export.

    Raises ExportError if the file or sidecar is missing, the sidecar is damaged, the checksum
    differs, or onnxruntime cannot load the file."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    if not path.is_file() or not sidecar.is_file():
        raise ExportError(f"{path}: expected the ONNX file and its sidecar {sidecar.name} (written by `adapmtl export`)")
    try:
        expected = json.loads(sidecar.read_text())["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ExportError(f"{sidecar}: damaged sidecar ({error!r})") from None
    if _sha256(path) != expected:
        raise ExportError(f"{path}: checksum mismatch: the file is truncated or corrupted "
                          f"(its SHA-256 differs from the one in {sidecar.name})")
    return _raw_session(path)


def check_onnx(path: str | Path, model: nn.Module, image: torch.Tensor) -> float:
    """Run `path` with onnxruntime on `image` and compare with `model(image)` (a tuple or a task dict);
    returns the largest absolute difference. Raises ExportError if onnxruntime cannot load the
    file or an output differs beyond tolerance."""
    session = _raw_session(path)
    got = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        expected = model(image)
    expected = [tensor for _, tensor in _flatten(expected, "")]
    if len(expected) != len(got):
        raise ExportError(f"{path}: {len(got)} outputs in the file, {len(expected)} from PyTorch")
    max_diff = 0.0
    for name, ours, theirs in zip([o.name for o in session.get_outputs()], got, expected):
        theirs = theirs.numpy()
        scale = max(1.0, float(np.abs(theirs).max()))
        try:
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale)
        except AssertionError as error:
            raise ExportError(f"{path}: output {name!r} differs from PyTorch's beyond tolerance: {error}") from None
        max_diff = max(max_diff, float(np.abs(ours - theirs).max()))
    return max_diff


def _raw_session(path: str | Path):
    import onnxruntime  # imported late: only ONNX work needs it

    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's exception types are not importable in a stable way
        raise ExportError(f"{path}: onnxruntime cannot load it ({error})") from None
