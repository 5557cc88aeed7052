"""Stand-ins for the users' own multitask networks, as factories `build(tasks, **options)` that a
run config names (`model.name: tests.user_models:<factory>`).

Shaped like the outside models users bring (no torchvision or timm: their wheels cannot be
imported with the CPU torch): a ResNet-style backbone with `ModuleDict` heads under other names
than `backbone`/`heads`; a U-Net with an auxiliary output; a ViT-like encoder with
`nn.MultiheadAttention`, a bare weight used through `F.linear`, and a tuple output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Block(nn.Module):
    """A ResNet basic block: two 3×3 convs with BN and an identity (or 1×1 strided) shortcut."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.downsample = None
        if stride != 1 or inputs != outputs:
            self.downsample = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + shortcut)


class ResNetHeads(nn.Module):
    """`encoder` (stem + two residual stages, 1/4 resolution) and `decoders` (a ModuleDict: one
    small conv head per task), outputs upsampled to the input: {task: [B, C, H, W]}."""

    def __init__(self, tasks: dict[str, int], width: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            _Block(width, width, 1), _Block(width, 2 * width, 2))
        self.decoders = nn.ModuleDict({
            task: nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, channels, 1))
            for task, channels in tasks.items()})

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encoder(image)
        return {task: F.interpolate(head(features), size=image.shape[-2:], mode="bilinear", align_corners=False)
                for task, head in self.decoders.items()}


def resnet_heads(tasks: dict[str, int], width: int = 8) -> nn.Module:
    """Factory of `ResNetHeads` (components: `encoder`, `decoders.<task>`)."""
    return ResNetHeads(tasks, width)


class UNet(nn.Module):
    """A two-level U-Net (down1, down2, up with a skip connection), a 1×1 output conv per task in
    `outputs`, and an auxiliary depth-like output from the bottleneck under the key "aux" (not a
    task: the engine ignores it, ONNX exports it)."""

    def __init__(self, tasks: dict[str, int], base: int = 8) -> None:
        super().__init__()
        self.down1 = nn.Sequential(nn.Conv2d(3, base, 3, padding=1), nn.BatchNorm2d(base), nn.ReLU())
        self.down2 = nn.Sequential(nn.Conv2d(base, 2 * base, 3, 2, 1), nn.BatchNorm2d(2 * base), nn.ReLU())
        self.up = nn.ConvTranspose2d(2 * base, base, 2, stride=2)
        self.fuse = nn.Sequential(nn.Conv2d(2 * base, base, 3, padding=1), nn.ReLU())
        self.outputs = nn.ModuleDict({task: nn.Conv2d(base, channels, 1) for task, channels in tasks.items()})
        self.aux = nn.Conv2d(2 * base, 1, 1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        skip = self.down1(image)
        bottom = self.down2(skip)
        features = self.fuse(torch.cat([self.up(bottom), skip], dim=1))
        outputs = {task: head(features) for task, head in self.outputs.items()}
        outputs["aux"] = F.interpolate(self.aux(bottom), size=image.shape[-2:], mode="bilinear", align_corners=False)
        return outputs


def unet(tasks: dict[str, int], base: int = 8) -> nn.Module:
    """Factory of `UNet`."""
    return UNet(tasks, base)


class TinyViT(nn.Module):
    """Patch embedding (conv, stride `patch`), a learned position embedding for `tokens` patches,
    an nn.TransformerEncoder (nn.MultiheadAttention inside), and per task a bare weight `proj_w`
    [dim, dim] used through F.linear then a Linear to the task's channels per patch; returns a
    tuple in task order, each [B, C, H, W] (the patch grid upsampled to the input)."""

    def __init__(self, tasks: dict[str, int], dim: int = 32, depth: int = 2, num_heads: int = 2,
                 patch: int = 8, tokens: int = 48) -> None:
        super().__init__()
        self.patch = patch
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        layer = nn.TransformerEncoderLayer(dim, num_heads, 2 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.task_names = list(tasks)
        self.heads = nn.ModuleList()
        for channels in tasks.values():
            head = nn.Module()
            head.proj_w = nn.Parameter(torch.randn(dim, dim) / dim ** 0.5)
            head.out = nn.Linear(dim, channels)
            self.heads.append(head)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        grid = self.embed(image)
        b, d, h, w = grid.shape
        tokens = self.encoder(grid.flatten(2).transpose(1, 2) + self.pos_embed)
        outputs = []
        for head in self.heads:
            patches = head.out(F.gelu(F.linear(tokens, head.proj_w)))  # [B, h·w, C]
            maps = patches.transpose(1, 2).reshape(b, -1, h, w)
            outputs.append(F.interpolate(maps, size=image.shape[-2:], mode="bilinear", align_corners=False))
        return tuple(outputs)


def tiny_vit(tasks: dict[str, int], dim: int = 32, depth: int = 2, num_heads: int = 2, patch: int = 8,
             tokens: int = 48) -> nn.Module:
    """Factory of `TinyViT` (prune `heads.*.proj_w` with `model.parameters`)."""
    return TinyViT(tasks, dim, depth, num_heads, patch, tokens)


def two_outputs(tasks: dict[str, int]) -> nn.Module:
    """A model that returns two outputs whatever the tasks (a user's mistake, for the error tests)."""

    class TwoOutputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Conv2d(3, 4, 3, padding=1)
            self.heads = nn.ModuleDict({"a": nn.Conv2d(4, 1, 1), "b": nn.Conv2d(4, 1, 1)})

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self.backbone(image)
            return self.heads["a"](features), self.heads["b"](features)

    return TwoOutputs()
