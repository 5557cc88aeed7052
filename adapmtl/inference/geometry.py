"""Output size of a convolution, shared by the execution paths."""
from __future__ import annotations

from torch import nn


def conv_output_size(layer: nn.Module, height: int, width: int) -> tuple[int, int]:
    """The spatial size a convolution (anything with kernel_size, stride, padding and
    dilation pairs) gives for an input of height × width."""
    return tuple(
        (size + 2 * layer.padding[i] - layer.dilation[i] * (layer.kernel_size[i] - 1) - 1) // layer.stride[i] + 1
        for i, size in enumerate((height, width))
    )
