"""Keypoints and edges (Taskonomy): one-channel maps in [0, 1], L1 loss and L1 error over all pixels."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from adapmtl.tasks.base import DEFAULT_CONVENTION, Convention, MetricAccumulator, Task, as_float, prepare, prepare_loss


class _L1MapTask(Task):
    """Prediction [B, 1, h, w] against a map [B, 1, H, W] in [0, 1].

    loss: mean |pred − target| over all pixels. Metric: the same mean absolute error over
    every pixel of the set (not a mean of per-batch means). `convention`: how a prediction at
    another resolution meets the target (see `adapmtl.tasks.CONVENTIONS`).
    """

    out_channels = 1
    fill_value = 0.0  # no keypoint / no edge

    def __init__(self, metrics: Sequence[str] | None = None, *, convention: Convention = DEFAULT_CONVENTION) -> None:
        """`metrics` defaults to all supported. Raises TaskError for an empty, repeated or unknown
        name, or an unknown convention."""
        super().__init__(self.supported_metrics if metrics is None else metrics, convention=convention)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean |pred − target| (scalar). Raises TaskError if either is not [B, 1, h/H, w/W]."""
        pred, target = prepare_loss(self.name, pred, target, 1, 1, self.convention)
        return F.l1_loss(pred, target)

    def accumulator(self) -> "L1MapMetrics":
        """A fresh mean-absolute-error accumulator for this task."""
        return L1MapMetrics(self.name, self.metrics, self.convention)


class KeypointsTask(_L1MapTask):
    """`keypoints2d`: metric `keypoint_err` (mean absolute error)."""

    name = "keypoints2d"
    supported_metrics = ("keypoint_err",)


class EdgesTask(_L1MapTask):
    """`edge_texture`: metric `edge_err` (mean absolute error)."""

    name = "edge_texture"
    supported_metrics = ("edge_err",)


class L1MapMetrics(MetricAccumulator):
    """Sum of absolute errors and pixel count."""

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch. Raises TaskError if `pred` or `target` is not [B, 1, h/H, w/W]."""
        pred = prepare(self.task, pred, target, 1, 1, self.convention)
        if target.numel() == 0:
            return
        self._add("abs_sum", (pred.double() - target.double()).abs().sum())
        self._add("count", torch.tensor(target.numel(), dtype=torch.int64, device=target.device))

    def compute(self) -> dict[str, float]:
        """{metric: mean absolute error}. Raises TaskError if no pixel was seen."""
        self._require_data()
        error = as_float(self.state["abs_sum"] / self.state["count"].double())
        return {m: error for m in self.metrics}
