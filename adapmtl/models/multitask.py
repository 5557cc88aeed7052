"""One shared backbone, one head per task: the model shape `adapmtl.sparsify` understands."""
from __future__ import annotations

from typing import Mapping

import torch.nn.functional as F
from torch import Tensor, nn


class MultiTaskModel(nn.Module):
    """`backbone` (features) + `heads` (an `nn.ModuleDict` keyed by task).

    forward(x [B, 3, H, W]) → {task: [B, C_task, H, W]}: the heads' outputs upsampled
    bilinearly (align_corners=False) to the input's resolution. With `upsample=False`
    the heads' native resolution is returned instead (H/8 for ResNet34, H/32 for
    MobileNetV2): cheaper, and the task losses and metrics upsample it themselves.
    `upsample` is a plain attribute, so it can be switched on an existing model.
    """

    def __init__(self, backbone: nn.Module, heads: Mapping[str, nn.Module], upsample: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)
        self.upsample = upsample

    @property
    def tasks(self) -> dict[str, int]:
        """{task: output channels}, in head order."""
        return {task: head.out_channels for task, head in self.heads.items()}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """[B, 3, H, W] → {task: [B, C_task, H, W]} (the heads' resolution if not `upsample`)."""
        features = self.backbone(x)
        outputs = {task: head(features) for task, head in self.heads.items()}
        if self.upsample:
            size = x.shape[-2:]
            outputs = {
                task: F.interpolate(out, size=size, mode="bilinear", align_corners=False)
                for task, out in outputs.items()
            }
        return outputs
