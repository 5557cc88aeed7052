"""How much arithmetic a forward needs: multiply-adds counted per layer, to turn times into rates
(GFLOP/s) that can be set against the machine's peak (issue 17: where a speed goal is out of reach,
say how far from the peak each side runs)."""
from __future__ import annotations

import copy
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
        """Both counts summed (a model's from its layers': `sum(work.values())` works too)."""
        if not isinstance(other, Work):
            return NotImplemented
        return Work(self.useful + other.useful, self.dense + other.dense)

    def __radd__(self, other: object) -> "Work":
        return self if isinstance(other, int) and other == 0 else NotImplemented  # sum()'s start, 0


def layer_work(layer: nn.Module, input_shape: torch.Size | tuple[int, ...]) -> Work:
    """The multiply-adds of `layer` (Conv2d or Linear) on an input of `input_shape` ([B, C, H, W] for a
    convolution, [..., in_features] for a linear layer). A convolution tap (kh, kw) adds its weights'
    count times the output positions where it reads inside the image (rows × columns, `inside_positions`);
    padding given as numbers, "same" or "valid"; with a padding mode other than zeros every tap reads data
    at every output.

    Raises TypeError for other layers; ValueError for a convolution input that is not [B, C, H, W] or [C, H, W]."""
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise TypeError(f"layer_work counts Conv2d and Linear layers, got {type(layer).__name__}")
    weight = layer.weight.detach()
    if isinstance(layer, nn.Conv2d):
        if len(input_shape) == 3:  # an unbatched [C, H, W] input, as PyTorch accepts
            input_shape = (1, *input_shape)
        if len(input_shape) != 4:
            raise ValueError(f"a Conv2d input is [B, C, H, W] or [C, H, W], got shape {list(input_shape)}")
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
    rows = 1
    for size in input_shape[:-1]:
        rows *= size
    return Work(rows * int(weight.ne(0).sum()), rows * weight.numel())


@torch.no_grad()
def model_work(model: nn.Module, example_input: torch.Tensor) -> dict[str, Work]:
    """{layer name: Work} for every Conv2d and Linear layer `model` uses on `example_input`: one forward in
    eval mode (the model's modes are restored after) with hooks that see each layer's input shape; a layer
    called twice counts twice. PyTorch's attention and encoder blocks, whose fused eval kernels use their
    Linear weights without calling them, are counted on a copy rewritten as `compile_sparse` runs them
    (`unfuse_transformers`: the in-projection as `self_attn.q_proj`, `k_proj`, `v_proj`)."""
    from adapmtl.inference.transformer import REWRITES, unfuse_transformers

    if any(type(module) in REWRITES for module in model.modules()):
        model, _ = unfuse_transformers(copy.deepcopy(model))
    found: dict[str, Work] = {}
    hooks = []

    def record(name: str):
        def hook(layer: nn.Module, args: tuple, kwargs: dict) -> None:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            work = layer_work(layer, tensors[0].shape)
            found[name] = found.get(name, Work(0, 0)) + work
        return hook

    modes = {module: module.training for module in model.modules()}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_pre_hook(record(name), with_kwargs=True))
    try:
        model.eval()
        model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.training = training
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
