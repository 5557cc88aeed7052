"""Depth: masked L1 over valid pixels (target > 0); errors and δ accuracies over valid pixels only."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from adapmtl.tasks.base import (
    DEFAULT_CONVENTION,
    Convention,
    MetricAccumulator,
    Task,
    as_float,
    count,
    masked_mean,
    prepare,
    prepare_loss,
)

DELTAS = {"delta_1_25": 1.25, "delta_1_25_2": 1.25**2, "delta_1_25_3": 1.25**3}


class DepthTask(Task):
    """`depth_zbuffer`: prediction [B, 1, h, w] against depth [B, 1, H, W] in metres, 0 = invalid.

    loss: mean |pred − target| over valid pixels (target > 0); 0 for a batch with none.
    Metrics over all valid pixels of the set: `abs_err` (mean |p − g|, metres), `rel_err`
    (mean |p − g| / g), `delta_1_25`, `delta_1_25_2`, `delta_1_25_3` (percent of pixels
    with max(p/g, g/p) < 1.25, 1.25², 1.25³; a prediction ≤ 0 is never within).
    convention: how a prediction at another resolution meets the target ("corrected":
    bilinear upsampling for loss and metrics; "paper": loss at the prediction's resolution
    against the nearest-resized target, metrics on the nearest-upsampled prediction; see
    `adapmtl.tasks.CONVENTIONS`).
    """

    name = "depth_zbuffer"
    supported_metrics = ("abs_err", "rel_err", *DELTAS)
    out_channels = 1
    fill_value = 0.0  # invalid depth

    def __init__(
        self, metrics: Sequence[str] = ("abs_err", "rel_err", *DELTAS), *, convention: Convention = DEFAULT_CONVENTION
    ) -> None:
        """Raises TaskError for an empty, repeated or unknown metric name, or an unknown convention."""
        super().__init__(metrics, convention=convention)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Masked L1 in metres (scalar). Raises TaskError if either is not [B, 1, h/H, w/W]."""
        pred, target = prepare_loss(self.name, pred, target, 1, 1, self.convention)
        return masked_mean((pred - target).abs(), target > 0)

    def accumulator(self) -> "DepthMetrics":
        """A fresh depth-metrics accumulator for this task."""
        return DepthMetrics(self.name, self.metrics, self.convention)


class DepthMetrics(MetricAccumulator):
    """Sums of absolute and relative errors and δ counts over valid pixels."""

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch. Raises TaskError if `pred` or `target` is not [B, 1, h/H, w/W]."""
        pred = prepare(self.task, pred, target, 1, 1, self.convention)
        valid = target > 0
        p, g = pred[valid].double(), target[valid].double()
        if g.numel() == 0:
            return
        error = (p - g).abs()
        self._add("count", torch.tensor(g.numel(), dtype=torch.int64, device=g.device))
        self._add("abs_sum", error.sum())
        self._add("rel_sum", (error / g).sum())
        ratio = torch.where(p > 0, torch.maximum(p / g, g / p.clamp(min=1e-300)), torch.full_like(p, float("inf")))
        for name, threshold in DELTAS.items():
            self._add(name, count(ratio < threshold))

    def compute(self) -> dict[str, float]:
        """{metric: value} over all valid pixels. Raises TaskError if no valid pixel was seen."""
        self._require_data()
        n = self.state["count"].double()
        values = {"abs_err": as_float(self.state["abs_sum"] / n), "rel_err": as_float(self.state["rel_sum"] / n)}
        values.update({name: as_float(self.state[name] / n * 100.0) for name in DELTAS})
        return {m: values[m] for m in self.metrics}
