"""Tiny multitask models for the sparsity tests: a conv one and a Linear-only one."""
from __future__ import annotations

import torch
from torch import nn


class ConvMultitask(nn.Module):
    """backbone (two convs + BN) and heads {"seg": 1 conv, "depth": 2 convs}."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()
        )
        self.heads = nn.ModuleDict(
            {
                "seg": nn.Conv2d(16, 4, 1),
                "depth": nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1)),
            }
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {task: head(features) for task, head in self.heads.items()}


class LinearMultitask(nn.Module):
    """backbone Linear(2→3) + heads {"a": Linear(3→1), "b": Linear(3→2)}: 6 + 3 + 6 weights."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 3), nn.Tanh())
        self.heads = nn.ModuleDict({"a": nn.Linear(3, 1), "b": nn.Linear(3, 2)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {task: head(features) for task, head in self.heads.items()}


def total_loss(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """A smooth scalar of all outputs, for gradient tests."""
    return sum((out.sin() * (i + 1)).sum() for i, out in enumerate(outputs.values()))


class RedundantHead(nn.Module):
    """A shared backbone every task needs (Linear 8→32, tanh: 256 weights), a head "needed"
    (Linear 32→4: 128 weights) for a task that uses every input, and a head "redundant"
    (32→32→1: 1,056 weights) for a task that needs one input feature only: far more weights
    than its task needs."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(8, 32), nn.Tanh())
        self.heads = nn.ModuleDict({
            "needed": nn.Linear(32, 4),
            "redundant": nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)),
        })

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {task: head(features) for task, head in self.heads.items()}


class DefaultInitHeads(nn.Module):
    """A conv backbone and two ModuleDict heads with PyTorch's default init, as in issue 13: the
    backbone's 3×3 convs (fan-in 576) reach |w| ≈ 0.042, the heads' first 5×5 convs (fan-in 1,600)
    stay below 0.025, so one threshold at 80 % zeroes those head layers whole (their outputs then
    no longer depend on the input) unless the collapse guard keeps them."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
                                      nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())
        self.heads = nn.ModuleDict({
            task: nn.Sequential(nn.Conv2d(64, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, channels, 1))
            for task, channels in (("seg", 4), ("depth", 1))
        })

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {task: head(features) for task, head in self.heads.items()}
