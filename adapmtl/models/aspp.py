"""The DeepLab-v2 ASPP head the paper puts on top of the backbone, one per task."""
from __future__ import annotations

from torch import Tensor, nn

RATES = (6, 12, 18, 24)
"""Dilation of the four parallel branches."""


class ASPPBranch(nn.Module):
    """conv3×3 (dilated, bias) → ReLU → Dropout → conv1×1 → ReLU → Dropout → conv1×1 to the outputs."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, rate: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=rate, dilation=rate, bias=True)
        self.conv2 = nn.Conv2d(hidden, hidden, 1, bias=True)
        self.conv3 = nn.Conv2d(hidden, out_channels, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """[B, in_channels, h, w] → [B, out_channels, h, w]."""
        x = self.dropout(self.relu(self.conv1(x)))
        x = self.dropout(self.relu(self.conv2(x)))
        return self.conv3(x)


class ASPPHead(nn.Module):
    """Four dilated branches (rates 6, 12, 18, 24) whose outputs are summed.

    Input [B, in_channels, h, w] → output [B, out_channels, h, w] (the backbone's resolution).
    The paper uses hidden=1024; PyTorch's default initialisation, as in the original code.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.branches = nn.ModuleList(
            ASPPBranch(in_channels, hidden, out_channels, rate, dropout) for rate in RATES
        )

    def forward(self, x: Tensor) -> Tensor:
        """[B, in_channels, h, w] → [B, out_channels, h, w]: the sum of the four branches."""
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out
