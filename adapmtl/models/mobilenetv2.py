"""The MobileNetV2 backbone of AdapMTL (Sandler et al. 2018), without pooling or classifier.

Inverted residuals (t, c, n, s) as in the paper, ReLU6, a final 1×1 conv to 1280 channels,
output stride 32. Convolutions start from N(0, 2/(k·k·out_channels)), BatchNorm from
weight 1, bias 0, as in the authors' code.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from adapmtl.models.registry import register_model

SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
"""(expansion t, channels c, repeats n, first stride s) of each stage."""
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of `divisor`, never more than 10 % down (TF's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]


class InvertedResidual(nn.Module):
    """[1×1 expand → BN → ReLU6] → 3×3 depthwise → BN → ReLU6 → 1×1 project → BN (+ identity)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = round(in_channels * expansion)
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [*_conv_bn(in_channels, hidden, 1, 1), nn.ReLU6(inplace=True)]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True)]
        layers += _conv_bn(hidden, out_channels, 1, 1)
        self.conv = nn.Sequential(*layers)
        self.identity = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        """[B, in_channels, H, W] → [B, out_channels, H/stride, W/stride]."""
        return x + self.conv(x) if self.identity else self.conv(x)


@register_model("mobilenetv2")
class MobileNetV2(nn.Module):
    """MobileNetV2 features: [B, 3, H, W] → [B, 1280·width, ≈H/32, ≈W/32].

    `width` scales every channel count with `make_divisible(c · width, 8)`, the final 1280
    included (the original keeps 1280 below width 1; scaling it keeps small configurations
    small). At width 1 this is the paper's backbone.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        in_channels = make_divisible(STEM_CHANNELS * width)
        layers: list[nn.Module] = [*_conv_bn(3, in_channels, 3, 2), nn.ReLU6(inplace=True)]
        for t, c, n, s in SETTINGS:
            out_channels = make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(in_channels, out_channels, s if i == 0 else 1, t))
                in_channels = out_channels
        self.out_channels = make_divisible(LAST_CHANNELS * width)
        layers += [*_conv_bn(in_channels, self.out_channels, 1, 1), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] → [B, out_channels, ≈H/32, ≈W/32]."""
        return self.features(x)
