"""The Deeplab-ResNet34 backbone of AdaShare / DiSparse / AdapMTL (output stride 8, 512 channels).

As in the authors' code: every block of a dilated stage, the first one included, uses the
stage's dilation in both 3×3 convolutions; the 1×1 projection shortcut (conv + BN) sits
wherever stride, channel count or dilation changes; the max-pool rounds up (ceil mode);
convolutions start from N(0, 0.01²), BatchNorm from weight 1, bias 0 (trained from scratch).
"""
from __future__ import annotations

from torch import Tensor, nn

from adapmtl.models.registry import register_model

LAYERS = (3, 4, 6, 3)
CHANNELS = (64, 128, 256, 512)
STRIDES = (1, 2, 1, 1)
DILATIONS = (1, 1, 2, 4)


class BasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int, dilation: int, project: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))
            if project
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        """[B, in_channels, H, W] → [B, channels, H/stride, W/stride]."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


@register_model("deeplab_resnet34")
class DeeplabResNet34(nn.Module):
    """Dilated ResNet34: [B, 3, H, W] → [B, 512·width, ⌈H/8⌉, ⌈W/8⌉] (about; exact sizes follow the convs).

    `width` scales every channel count (64, 128, 256, 512), rounded, at least 1.
    At width 1 the convolutions hold 21,267,648 weights.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        channels = [max(1, round(c * width)) for c in CHANNELS]
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels[0], 7, 2, padding=3, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        )
        stages = []
        in_channels, previous_dilation = channels[0], 1
        for n, c, stride, dilation in zip(LAYERS, channels, STRIDES, DILATIONS):
            project = stride != 1 or in_channels != c or dilation != previous_dilation
            blocks = [BasicBlock(in_channels, c, stride, dilation, project)]
            blocks += [BasicBlock(c, c, 1, dilation, False) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels, previous_dilation = c, dilation
        self.stages = nn.Sequential(*stages)
        self.out_channels = channels[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] → [B, out_channels, ≈H/8, ≈W/8]."""
        return self.stages(self.stem(x))
