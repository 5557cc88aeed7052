"""Dense CPU runtimes to compare `compile_sparse` with: ONNX Runtime and OpenVINO, each running
adapmtl's own ONNX export (`adapmtl.export.onnx.write_onnx`) of the finalized model, dense.

A runner is called like the model, `runner(x)` with x a float32 CPU tensor [B, 3, H, W] of the example's
shape (another raises InferenceError: the runtime was set up for that one), and
returns the model's outputs as a tuple of tensors in the ONNX file's output order (that of
`adapmtl.export.onnx._flatten`: a dict model's keys, in order). Each is set up for the fastest
single-stream latency its runtime offers: the batch fixed to the example's (a static shape lets
both plan their kernels), `threads` intra-op threads, one inter-op thread, sequential execution.
ONNX Runtime's threads spin during a run, as by default, and stop when it returns, so that they leave
the cores to whatever the process runs next (in the benchmark: the next contender).

onnxruntime is a dependency; OpenVINO is the optional extra `bench` (`pip install -e ".[bench]"`):
`openvino_available()` says whether it imports, nothing else here needs it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from adapmtl.inference.check import InferenceError

Runner = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


def openvino_available() -> bool:
    """Whether the OpenVINO Python package is installed (the optional `bench` extra)."""
    return importlib.util.find_spec("openvino") is not None


def _as_tensors(outputs: list[Any]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.asarray(o)) for o in outputs)


def _check_shape(x: torch.Tensor, example: torch.Tensor, runtime: str) -> None:
    """Raises InferenceError unless `x` has `example`'s shape: the runner was set up for that static shape,
    and the runtime's own error for another would not say so."""
    if x.shape != example.shape:
        raise InferenceError(f"this {runtime} runner was set up for inputs of shape {list(example.shape)} (the "
                             f"example's), got {list(x.shape)}: make another runner for that shape")


def onnxruntime_runner(path: str | Path, example: torch.Tensor, threads: int) -> Runner:
    """ONNX Runtime (CPU) on the file at `path`: default graph optimisations (all), `threads` intra-op
    threads, one inter-op thread, sequential execution, the dynamic batch fixed to example's.

    Raises InferenceError if onnxruntime cannot load the file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Its pool spins while a run lasts, as by default, but stops when the run returns: left spinning, on two
    # cores it took one from whatever the process ran next, for longer than the benchmark's pause (the
    # compiled model ran at 51-57 ms right after it, 33-36 ms on its own).
    options.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        probe = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        batch_dim = probe.get_inputs()[0].shape[0]
        if isinstance(batch_dim, str):  # a symbolic batch: pin it, as OpenVINO's reshape does
            options.add_free_dimension_override_by_name(batch_dim, int(example.shape[0]))
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's exception types are not importable in a stable way
        raise InferenceError(f"{path}: onnxruntime cannot load it ({error})") from None
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _check_shape(x, example, "ONNX Runtime")
        return _as_tensors(session.run(None, {name: x.numpy()}))

    return run


def openvino_compiled(path: str | Path, example: torch.Tensor, threads: int, **config: Any) -> Any:
    """OpenVINO's compiled model (CPU device) of the file at `path`, reshaped to example's static shape, with
    INFERENCE_NUM_THREADS = `threads`, the LATENCY performance hint and float32 inference precision (on CPUs
    with bfloat16 support OpenVINO would otherwise compute in bfloat16, a different model); `config` adds
    properties (e.g. PERF_COUNT=True for its per-layer profile).

    Raises InferenceError if OpenVINO is not installed or cannot compile the file."""
    if not openvino_available():
        raise InferenceError('OpenVINO is not installed (pip install -e ".[bench]")')
    import openvino as ov

    try:
        core = ov.Core()
        model = core.read_model(str(path))
        model.reshape({model.inputs[0].get_any_name(): list(example.shape)})
        return core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_PRECISION_HINT": "f32", **config})
    except Exception as error:  # OpenVINO raises its own RuntimeError subclasses
        raise InferenceError(f"{path}: OpenVINO cannot compile it ({error})") from None


def openvino_runner(path: str | Path, example: torch.Tensor, threads: int) -> Runner:
    """OpenVINO on the file at `path`, compiled by `openvino_compiled` for example's shape.

    Raises InferenceError if OpenVINO is not installed or cannot compile the file."""
    compiled = openvino_compiled(path, example, threads)
    request = compiled.create_infer_request()
    outputs = compiled.outputs

    def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _check_shape(x, example, "OpenVINO")
        result = request.infer({0: x.numpy()})
        return tuple(torch.from_numpy(np.array(result[o])) for o in outputs)

    return run


RUNTIMES: dict[str, Callable[[str | Path, torch.Tensor, int], Runner]] = {
    "onnxruntime": onnxruntime_runner, "openvino": openvino_runner}


def available_runtimes() -> list[str]:
    """Names in RUNTIMES whose package is installed ("onnxruntime" always, "openvino" with the extra)."""
    return ["onnxruntime"] + (["openvino"] if openvino_available() else [])


@torch.no_grad()
def max_difference(runner: Callable[[torch.Tensor], Any], model: nn.Module, x: torch.Tensor,
                   rtol: float = 1e-4, atol: float = 1e-5) -> float:
    """Largest |runner(x) − model(x)| over every output (in flattened order), after checking that each
    is within atol + rtol × (that output's largest magnitude).

    Raises InferenceError naming the output if one differs beyond that, or the counts or shapes differ."""
    from adapmtl.export.onnx import _flatten

    expected = [t for _, t in _flatten(model(x), "")]
    got = list(runner(x))
    if len(got) != len(expected):
        raise InferenceError(f"{len(got)} outputs, the model gives {len(expected)}")
    largest = 0.0
    for index, (ours, theirs) in enumerate(zip(got, expected)):
        if ours.shape != theirs.shape:
            raise InferenceError(f"output {index} has shape {list(ours.shape)}, the model's {list(theirs.shape)}")
        difference = float((ours.double() - theirs.double()).abs().max())
        tolerance = atol + rtol * float(theirs.abs().max())
        if not difference <= tolerance:
            raise InferenceError(f"output {index} differs from the model's by up to {difference:.3g} "
                                 f"(tolerance {tolerance:.3g})")
        largest = max(largest, difference)
    return largest
