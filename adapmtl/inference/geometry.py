"""Where a convolution's taps land: output size, and which output positions each tap reads inside
the image (shared by the execution paths and the work count)."""
from __future__ import annotations

from torch import nn


def conv_output_size(layer: nn.Module, height: int, width: int) -> tuple[int, int]:
    """The spatial size a convolution (anything with kernel_size, stride, padding and
    dilation pairs) gives for an input of height × width."""
    return tuple(axis[5] for axis in conv_axes(layer, height, width))


def conv_axes(layer: nn.Module, height: int, width: int) -> list[tuple[int, int, int, int, int, int]]:
    """Per axis (height, then width): (kernel, stride, padding before, dilation, input size, output size) of a
    convolution (anything with kernel_size, stride, padding and dilation pairs), for padding given as numbers
    or as "valid" / "same" (PyTorch's rule: the odd pixel of padding after)."""
    axes = []
    for i, size in enumerate((height, width)):
        kernel, stride, dilation = layer.kernel_size[i], layer.stride[i], layer.dilation[i]
        if layer.padding == "same":
            total = dilation * (kernel - 1)
            before, out_size = total // 2, size
        else:
            before = 0 if layer.padding == "valid" else layer.padding[i]
            out_size = (size + 2 * before - dilation * (kernel - 1) - 1) // stride + 1
        axes.append((kernel, stride, before, dilation, size, out_size))
    return axes


def inside_positions(kernel: int, stride: int, padding: int, dilation: int, size: int, out_size: int) -> list[int]:
    """For each tap k of one axis, how many output positions o in [0, out_size) read an input position
    o·stride − padding + k·dilation inside [0, size) (the rest read zero padding). Length `kernel`."""
    counts = []
    for k in range(kernel):
        shift = k * dilation - padding
        first = 0 if shift >= 0 else -(shift // stride)  # smallest o with o·stride + shift >= 0
        last = min(out_size - 1, (size - 1 - shift) // stride) if size - 1 - shift >= 0 else -1
        counts.append(max(0, last - first + 1))
    return counts


def inside_taps(kernel: int, stride: int, padding: int, dilation: int, size: int, out_size: int) -> range:
    """The taps k of one axis that read the image at some output position: a contiguous range (maybe
    empty), since the input position grows with k. A dilated tap on a small map can see only padding."""
    inside = [k for k, count in enumerate(inside_positions(kernel, stride, padding, dilation, size, out_size)) if count]
    return range(inside[0], inside[-1] + 1) if inside else range(0)
