"""How much arithmetic a forward needs: multiply-adds counted per layer, to turn times into rates
(GFLOP/s) that can be set against the machine's peak (issue 17: where a speed goal is out of reach,
say how far from the peak each side runs)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from adapmtl.inference import native
from adapmtl.inference.geometry import conv_axes, inside_positions


@dataclass(frozen=True)
class Work:
    """Multiply-adds of one forward. `useful`: with a nonzero weight and an input inside the image, the
    least any exact method must do; `dense`: with every weight, inside the image (what a dense runtime
    that skips zero padding does; one that multiplies padding does more)."""

    useful: int
    dense: int

    def __add__(self, other: "Work") -> "Work":
        """Both counts summed (a model's from its layers')."""
        return Work(self.useful + other.useful, self.dense + other.dense)


def layer_work(layer: nn.Module, input_shape: torch.Size | tuple[int, ...]) -> Work:
    """The multiply-adds of `layer` (Conv2d or Linear) on an input of `input_shape` ([B, C, H, W] for a
    convolution, [..., in_features] for a linear layer). A convolution tap (kh, kw) adds its weights'
    count times the output positions where it reads inside the image (rows × columns, `inside_positions`);
    padding given as numbers, "same" or "valid"; with a padding mode other than zeros every tap reads data
    at every output.

    Raises TypeError for other layers."""
    weight = layer.weight.detach()
    if isinstance(layer, nn.Conv2d):
        batch, _, height, width = input_shape
        per_axis = []
        for kernel, stride, before, dilation, size, out_size in conv_axes(layer, height, width):
            if layer.padding_mode == "zeros":
                per_axis.append(inside_positions(kernel, stride, before, dilation, size, out_size))
            else:  # reflected, replicated or circular padding is data: every tap reads some at every output
                per_axis.append([max(out_size, 0)] * kernel)
        rows, columns = (torch.tensor(counts, dtype=torch.float64) for counts in per_axis)
        positions = rows[:, None] * columns[None, :]  # [kh, kw]: output positions each tap reads inside
        per_tap_nonzero = weight.ne(0).sum(dim=(0, 1)).double()
        per_tap_all = float(weight.shape[0] * weight.shape[1])
        return Work(int(batch * (per_tap_nonzero * positions).sum()), int(batch * per_tap_all * positions.sum()))
    if isinstance(layer, nn.Linear):
        rows = 1
        for size in input_shape[:-1]:
            rows *= size
        return Work(rows * int(weight.ne(0).sum()), rows * weight.numel())
    raise TypeError(f"layer_work counts Conv2d and Linear layers, got {type(layer).__name__}")


@torch.no_grad()
def model_work(model: nn.Module, example_input: torch.Tensor) -> dict[str, Work]:
    """{layer name: Work} for every Conv2d and Linear layer `model` calls on `example_input` (one forward,
    with hooks to see each layer's input shape; a layer called twice counts twice)."""
    found: dict[str, Work] = {}
    hooks = []

    def record(name: str):
        def hook(layer: nn.Module, inputs: tuple) -> None:
            work = layer_work(layer, inputs[0].shape)
            found[name] = found[name] + work if name in found else work
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_pre_hook(record(name)))
    try:
        model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
    return found


def core_peak_gflops(seconds: float = 0.1) -> float | None:
    """One core's float32 multiply-add peak (GFLOP/s, 2 per multiply-add), measured: the native kernel
    build's vector multiply-adds in registers, no memory (`adapmtl_multiply_add_rounds`), the best of
    three runs of about `seconds` each. None where the native kernel is unavailable. A model's rate on
    n threads is set against n times this (the peak of n cores)."""
    library = native.kernels()
    if library is None:
        return None
    lanes = max(library.adapmtl_simd_lanes(), 1)
    iterations = 1_000_000
    library.adapmtl_multiply_add_rounds(iterations)  # warm-up
    start = time.perf_counter()
    library.adapmtl_multiply_add_rounds(iterations)  # a first estimate of the rate, to size the runs
    iterations = max(iterations, int(iterations * seconds / max(time.perf_counter() - start, 1e-9)))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        library.adapmtl_multiply_add_rounds(iterations)
        best = min(best, time.perf_counter() - start)
    return 2 * 8 * lanes * iterations / best / 1e9
