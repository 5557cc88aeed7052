"""The DeepLab-v2 ASPP head the paper puts on top of the backbone, one per task."""
from __future__ import annotations

from torch import Tensor, nn

RATES = (6, 12, 18, 24)
"""The paper's dilations of the four parallel branches."""


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
    """Four dilated branches (the paper's rates 6, 12, 18, 24 by default) whose outputs are summed.

    Input [B, in_channels, h, w] → output [B, out_channels, h, w] (the backbone's resolution).
    The paper uses hidden=1024; PyTorch's default initialisation, as in the original code.
    `rates`: the four branches' dilations in pixels of the backbone's output. A tap at dilation d
    reads d pixels away, so along a side of d pixels or fewer the outer taps only see padding and
    their weights get no gradient: small inputs need small rates (`create_model` checks them).
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 1024, dropout: float = 0.5,
                 rates: tuple[int, int, int, int] = RATES) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(
            ASPPBranch(in_channels, hidden, out_channels, rate, dropout) for rate in rates
        )

    def forward(self, x: Tensor) -> Tensor:
        """[B, in_channels, h, w] → [B, out_channels, h, w]: the sum of the four branches."""
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out
