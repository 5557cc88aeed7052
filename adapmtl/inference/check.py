"""The whole-model check: a transformed model must give the original model's outputs.

Every transform `compile_sparse` makes (BatchNorm folding, replacing layers by their
paths, reusing a saved plan) ends with `ModelCheck.verify`, so a wrong result is an
error, never a silently wrong model.
"""
from __future__ import annotations

import dataclasses

from collections.abc import Mapping
from typing import Any, Iterator

import torch
from torch import nn

from adapmtl.errors import AdapMTLError

# An output passes when max |compiled - original| <= atol + rtol * max |original|, with
# rtol = max(MODEL_RTOL, 8 * the dtype's epsilon): float rounding differs between paths
# and adds up over the layers (about 1e-5 of the output scale in float32 on the paper
# models), while a wrong transform is off by a large fraction of it.
MODEL_RTOL = 1e-3


class InferenceError(AdapMTLError, ValueError):
    """A model or plan that compile_sparse cannot use, or a compiled model that differs from the original."""


def _leaves(output: Any, name: str) -> Iterator[tuple[str, Any]]:
    """(name, value) of every tensor or other value in nested dicts, lists, tuples and dataclasses."""
    if isinstance(output, Mapping):
        for key, value in output.items():
            yield from _leaves(value, f"{name}[{key!r}]")
    elif isinstance(output, (list, tuple)):
        for index, value in enumerate(output):
            yield from _leaves(value, f"{name}[{index}]")
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        for item in dataclasses.fields(output):
            yield from _leaves(getattr(output, item.name), f"{name}.{item.name}")
    else:
        yield name, output


def _same_value(got: Any, expected: Any) -> bool:
    """Equality of two non-tensor leaves; an object whose == is not a plain bool (one holding tensors,
    say) is compared by its repr."""
    try:
        return bool(got == expected)
    except (RuntimeError, TypeError, ValueError):
        return repr(got) == repr(expected)


def _max_difference(expected: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    """(max |got - expected|, max |expected|) over finite values; equal infinities and NaN in both count as equal."""
    expected, got = expected.detach().double(), got.detach().double()
    same = (got == expected) | (got.isnan() & expected.isnan())
    difference = (got - expected).abs().masked_fill(same, 0).nan_to_num(nan=float("inf"))
    scale = expected.abs().masked_fill(~expected.isfinite(), 0)
    return float(difference.max()), float(scale.max())


def _tolerance(dtype: torch.dtype, atol: float, scale: float) -> float:
    rtol = max(MODEL_RTOL, 8 * torch.finfo(dtype).eps) if dtype.is_floating_point else 0.0
    return atol + rtol * scale


def random_like(example: torch.Tensor) -> torch.Tensor:
    """The check's second input: normal, seed 0, example's shape, dtype and device."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(example.shape, generator=generator, dtype=example.dtype).to(example.device)


class ModelCheck:
    """The original model's outputs on the example input and (unless `random_input` is False) on a
    second, random input of the same shape, dtype and device (normal, fixed seed); `verify`
    compares a candidate with them. Reloading a saved plan checks on the example input alone:
    the plan's paths were checked on both when it was made, and each dense forward of a large
    model costs about a second.

    Raises InferenceError if `example_input` is not a floating-point tensor, or the model
    fails on it.
    """

    @torch.no_grad()
    def __init__(self, model: nn.Module, example_input: torch.Tensor, atol: float = 1e-5,
                 random_input: bool = True) -> None:
        if not isinstance(example_input, torch.Tensor) or not example_input.is_floating_point():
            got = example_input.dtype if isinstance(example_input, torch.Tensor) else type(example_input).__name__
            raise InferenceError(f"compile_sparse: example_input must be a floating-point tensor (a batch of the "
                                 f"model's inputs), got {got}")
        self.inputs = {"the example input": example_input}
        if random_input:
            self.inputs["a random input"] = random_like(example_input)
        self.atol = atol
        self.got: dict[str, Any] = {}  # the last verified candidate's outputs, by input
        self.expected = {}
        for label, x in self.inputs.items():
            try:
                self.expected[label] = model(x)
            except Exception as error:  # the user's model on the user's input: say which input
                raise InferenceError(f"compile_sparse: the model fails on {label} of shape {list(x.shape)}: "
                                     f"{error}") from error

    @torch.no_grad()
    def verify(self, candidate: nn.Module, what: str = "the compiled model") -> None:
        """Raises InferenceError unless `candidate` gives the original outputs on both inputs: the
        same structure (dict keys, tuple lengths), shapes and dtypes, and every tensor within
        atol + rtol * (its largest magnitude) (see MODEL_RTOL); other values equal.
        The message names the input, the output (e.g. output['depth'] or output[1]) and the
        max difference."""
        for label, x in self.inputs.items():
            try:
                got = candidate(x)
            except Exception as error:  # the original ran on this input: the transform broke it
                raise InferenceError(f"compile_sparse: {what} fails on {label} where the model runs: "
                                     f"{type(error).__name__}: {error}") from error
            self.compare(label, got, what)
            self.got[label] = got

    def compare(self, label: str, got: Any, what: str = "the compiled model") -> None:
        """Raises InferenceError unless `got`, a candidate's outputs on the input `label` (a key of
        `inputs`), equals the original's as `verify` requires (for a forward run for another purpose
        too, such as capturing the layers' inputs)."""
        where = f"{what} on {label}"
        expected = dict(_leaves(self.expected[label], "output"))
        got = dict(_leaves(got, "output"))
        if expected.keys() != got.keys():
            missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
            raise InferenceError(f"compile_sparse: {what} returns other outputs than the model on {label}: "
                                 f"missing {missing}, unexpected {extra}")
        for name, value in expected.items():
            self._compare(name, value, got[name], where)

    def _compare(self, name: str, expected: Any, got: Any, where: str) -> None:
        if not isinstance(expected, torch.Tensor):
            if isinstance(got, torch.Tensor) or type(got) is not type(expected) or not _same_value(got, expected):
                raise InferenceError(f"compile_sparse: {where}: {name} is {got!r}, the model gives {expected!r}")
            return
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape or got.dtype != expected.dtype:
            found = f"{got.dtype} {list(got.shape)}" if isinstance(got, torch.Tensor) else repr(got)
            raise InferenceError(f"compile_sparse: {where}: {name} is {found}, expected "
                                 f"{expected.dtype} {list(expected.shape)}")
        if expected.numel() == 0:
            return
        difference, scale = _max_difference(expected, got)
        tolerance = _tolerance(expected.dtype, self.atol, scale)
        if not difference <= tolerance:
            raise InferenceError(f"compile_sparse: {where}: {name} differs from the model's by up to {difference:.3g} "
                                 f"(tolerance {tolerance:.3g} for values up to {scale:.3g})")
