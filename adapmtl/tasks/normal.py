"""Surface normals: 1 − cosine loss over valid pixels; angle errors in degrees."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from adapmtl.tasks.base import MetricAccumulator, Task, as_float, count, masked_mean, prepare

BIN_DEGREES = 0.01
"""Width of the angle histogram the median is read from: the median is exact to ±BIN_DEGREES/2."""
N_BINS = round(180.0 / BIN_DEGREES)
WITHIN = {"within_11_25": 11.25, "within_22_5": 22.5, "within_30": 30.0}


def valid_normals(target: Tensor) -> Tensor:
    """[B, H, W] mask: pixels whose target is not the (0, 0, 0) invalid marker."""
    return target.abs().sum(dim=1) > 0


class NormalTask(Task):
    """`normal`: prediction [B, 3, h, w] (any length; normalised here) against unit
    vectors [B, 3, H, W], exactly (0, 0, 0) where invalid.

    loss: mean over valid pixels of 1 − cos(pred, target); 0 for a batch with none.
    Metrics over all valid pixels of the set: `angle_mean`, `angle_median` (degrees; the
    median from a 0.01° histogram, error ≤ 0.005°), `within_11_25`, `within_22_5`,
    `within_30` (percent of pixels with angle ≤ the threshold), `cosine_similarity`
    (mean cosine, −1…1). A zero-length predicted normal counts as 90° off.
    """

    name = "normal"
    supported_metrics = ("angle_mean", "angle_median", *WITHIN, "cosine_similarity")
    out_channels = 3
    fill_value = 0.0  # the invalid normal (0, 0, 0)

    def __init__(self, metrics: Sequence[str] = ("angle_mean", "angle_median", *WITHIN)) -> None:
        """Raises TaskError for an empty, repeated or unknown metric name."""
        super().__init__(metrics)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean 1 − cosine over valid pixels (scalar). Raises TaskError if either is not [B, 3, h/H, w/W]."""
        pred = prepare(self.name, pred, target, 3, 3)
        cosine = F.cosine_similarity(pred, target, dim=1, eps=1e-8)
        return masked_mean(1.0 - cosine, valid_normals(target))

    def accumulator(self) -> "NormalMetrics":
        """A fresh angle-metrics accumulator for this task."""
        return NormalMetrics(self.name, self.metrics)


def angles_degrees(pred: Tensor, target: Tensor) -> Tensor:
    """Angle between [N, 3] vectors in degrees (float64, atan2: accurate near 0° and 180°)."""
    pred, target = pred.double(), target.double()
    dot = (pred * target).sum(dim=1)
    cross = torch.linalg.cross(pred, target, dim=1).norm(dim=1)
    angle = torch.rad2deg(torch.atan2(cross, dot))
    # a zero-length prediction is 90° off; a NaN one stays NaN (a diverged model must not score)
    return torch.where(pred.norm(dim=1) == 0, torch.full_like(angle, 90.0), angle)


class NormalMetrics(MetricAccumulator):
    """Sums, threshold counts and a fixed 18,000-bin angle histogram: memory independent of the set size."""

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch. Raises TaskError if `pred` or `target` is not [B, 3, h/H, w/W]."""
        pred = prepare(self.task, pred, target, 3, 3)
        valid = valid_normals(target)
        angle = angles_degrees(pred.permute(0, 2, 3, 1)[valid], target.permute(0, 2, 3, 1)[valid])
        if angle.numel() == 0:
            return
        self._add("count", torch.tensor(angle.numel(), dtype=torch.int64, device=angle.device))
        self._add("angle_sum", angle.sum())
        self._add("cos_sum", torch.cos(torch.deg2rad(angle)).sum())
        for name, threshold in WITHIN.items():
            self._add(name, count(angle <= threshold))
        bins = (angle / BIN_DEGREES).floor().long().clamp(0, N_BINS - 1)
        self._add("histogram", torch.bincount(bins, minlength=N_BINS))

    def compute(self) -> dict[str, float]:
        """{metric: value} over all valid pixels. Raises TaskError if no valid pixel was seen."""
        self._require_data()
        n = self.state["count"].double()
        values = {
            "angle_mean": as_float(self.state["angle_sum"] / n),
            "angle_median": histogram_median(self.state["histogram"], BIN_DEGREES),
            "cosine_similarity": as_float(self.state["cos_sum"] / n),
        }
        values.update({name: as_float(self.state[name] / n * 100.0) for name in WITHIN})
        return {m: values[m] for m in self.metrics}


def histogram_median(histogram: Tensor, bin_width: float) -> float:
    """Median of the values counted in `histogram` (bin i = [i·w, (i+1)·w)).

    The mean of the two middle order statistics (one when the count is odd), each taken
    at its bin's centre: within bin_width / 2 of the exact median.
    """
    cumulative = histogram.cumsum(0)
    n = int(cumulative[-1].item())
    ranks = torch.tensor([(n - 1) // 2 + 1, n // 2 + 1], device=cumulative.device)
    bins = torch.searchsorted(cumulative, ranks).double()
    return as_float(((bins + 0.5) * bin_width).mean())
