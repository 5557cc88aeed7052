"""Surface normals: 1 − cosine loss over valid pixels; angle errors in degrees."""
from __future__ import annotations

from types import MappingProxyType
from typing import Literal, Mapping, Sequence, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from adapmtl.tasks.base import (
    DEFAULT_CONVENTION,
    Convention,
    MetricAccumulator,
    Task,
    TaskError,
    as_float,
    count,
    masked_mean,
    prepare,
    prepare_loss,
)

BIN_DEGREES = 0.01
"""Width of the angle histogram the median is read from: the median is exact to ±BIN_DEGREES/2."""
N_BINS = round(180.0 / BIN_DEGREES)
WITHIN = {"within_11_25": 11.25, "within_22_5": 22.5, "within_30": 30.0}


PaperVectors = Literal["colour", "unit"]
PAPER_VECTORS: tuple[str, ...] = get_args(PaperVectors)
PAPER_NORMAL_VECTORS: Mapping[str, PaperVectors] = MappingProxyType({"nyuv2": "colour", "taskonomy": "unit"})
"""Which vectors the original code compares under the "paper" convention, by dataset: NYU-v2's
loader (AdaShare, reused by DiSparse and AdapMTL) hands the 8-bit colour PNG to the loss and
metrics as is ("colour"); its Taskonomy loader decodes raw / 255 · 2 − 1 first ("unit")."""

COLOUR_SCALE = 127.5
"""A unit normal n is stored as the 8-bit colour (n + 1) · COLOUR_SCALE, channel by channel."""
COLOUR_SATURATED = 254.5
"""A re-encoded channel at or above this rounds to 255: the original drops such pixels."""


def valid_normals(target: Tensor) -> Tensor:
    """[B, H, W] mask: pixels whose target is not the (0, 0, 0) invalid marker."""
    return target.abs().sum(dim=1) > 0


def colour_vectors(normals: Tensor) -> Tensor:
    """Unit normals [B, 3, H, W] (components in [-1, 1]) → their 8-bit colour encoding
    (n + 1) · 127.5, float, 0…255: the raw vectors the original NYU-v2 code compares."""
    return (normals + 1.0) * COLOUR_SCALE


def compared_vectors(target: Tensor, convention: Convention, vectors: PaperVectors) -> tuple[Tensor, Tensor]:
    """(the vectors a prediction is compared with [B, 3, H, W], the valid mask [B, H, W]) for a
    target of unit normals [B, 3, H, W] (0, 0, 0 = invalid).

    "corrected", or "paper" with vectors="unit": the unit normals and `valid_normals`.
    "paper" with vectors="colour" (NYU-v2): the colour vectors (n + 1) · 127.5, valid where
    the normal is valid and no channel rounds to 255 — the original keeps a pixel only if
    `gt.max(dim=1)[0] != 255` on the 8-bit colour (its padding marker), which also drops valid
    normals within about 5.1° of +x, +y or +z. Our targets are decoded and renormalised, so
    the set matches the original's up to pixels within one 8-bit step of that cone.
    """
    valid = valid_normals(target)
    if convention != "paper" or vectors == "unit":
        return target, valid
    colour = colour_vectors(target)
    return colour, valid & (colour < COLOUR_SATURATED).all(dim=1)


class NormalTask(Task):
    """`normal`: prediction [B, 3, h, w] (any length; normalised here) against unit
    vectors [B, 3, H, W], exactly (0, 0, 0) where invalid.

    loss: mean over valid pixels of 1 − cos(pred, target); 0 for a batch with none.
    Metrics over all valid pixels of the set: `angle_mean`, `angle_median` (degrees; the
    median from a 0.01° histogram, error ≤ 0.005°), `within_11_25`, `within_22_5`,
    `within_30` (percent of pixels with angle ≤ the threshold), `cosine_similarity`
    (mean cosine, −1…1). A zero-length predicted normal counts as 90° off.

    convention (see `adapmtl.tasks.CONVENTIONS`):
      "corrected" (default): the prediction is a normal; cosines and angles are true ones
          between unit normals. A prediction at another resolution is upsampled bilinearly.
      "paper": as the original code (AdaShare `get_sn_loss`/`normal_error`, DiSparse and
          AdapMTL `sn_loss`/`__sn_error`): with paper_vectors="colour" (NYU-v2) the target is
          taken as its 8-bit colour c = (n + 1) · 127.5 (we re-encode our decoded unit
          normals), prediction and c are each L2-normalised as raw vectors and compared:
          loss 1 − cos(pred, c), angle = arccos(cos(pred, c)). The prediction is thus trained
          toward the colour's direction, not the normal, and angles come out about 2×
          smaller than true ones, by a factor that depends on the normal: a true 15° error
          reads 7.06° and a true 30° one 14.06° for a normal with n·(1, 1, 1) = 1/4 tilted
          about n × (1, 1, 1), 5.48° / 10.89° for n = (1, 1, 1)/√3, 6.8° / 13.4° on average
          over uniformly random normals and tilts; opposite normals ±(1, 1, 1)/√3 share one
          colour direction and read 0°. Pixels whose colour has a channel at 255 are dropped
          (see `compared_vectors`). paper_vectors="unit" (Taskonomy, whose original loader
          decodes the normals) compares unit normals as "corrected" does. In both, the loss
          is taken at the prediction's resolution against the nearest-resized target and the
          metrics on the nearest-upsampled prediction.
    """

    name = "normal"
    supported_metrics = ("angle_mean", "angle_median", *WITHIN, "cosine_similarity")
    out_channels = 3
    fill_value = 0.0  # the invalid normal (0, 0, 0)

    def __init__(
        self,
        metrics: Sequence[str] = ("angle_mean", "angle_median", *WITHIN),
        *,
        convention: Convention = DEFAULT_CONVENTION,
        paper_vectors: PaperVectors = "colour",
    ) -> None:
        """paper_vectors: what "paper" compares, "colour" (NYU-v2) or "unit" (Taskonomy); see
        PAPER_NORMAL_VECTORS. Raises TaskError for an empty, repeated or unknown metric name, an
        unknown convention or paper_vectors."""
        super().__init__(metrics, convention=convention)
        if paper_vectors not in PAPER_VECTORS:
            raise TaskError(f"{self.name}: paper_vectors must be one of {list(PAPER_VECTORS)}, got {paper_vectors!r}")
        self.paper_vectors = paper_vectors

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean 1 − cosine over valid pixels (scalar). Raises TaskError if either is not [B, 3, h/H, w/W]."""
        pred, target = prepare_loss(self.name, pred, target, 3, 3, self.convention)
        vectors, valid = compared_vectors(target, self.convention, self.paper_vectors)
        cosine = F.cosine_similarity(pred, vectors, dim=1, eps=1e-8)
        return masked_mean(1.0 - cosine, valid)

    def accumulator(self) -> "NormalMetrics":
        """A fresh angle-metrics accumulator for this task."""
        return NormalMetrics(self.name, self.metrics, self.convention, self.paper_vectors)


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

    def __init__(
        self,
        task: str,
        metrics: tuple[str, ...],
        convention: Convention = DEFAULT_CONVENTION,
        paper_vectors: PaperVectors = "colour",
    ) -> None:
        """Angles as `NormalTask` documents for `convention` and `paper_vectors`. Raises TaskError
        for an unknown convention."""
        super().__init__(task, metrics, convention)
        self.paper_vectors = paper_vectors

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch. Raises TaskError if `pred` or `target` is not [B, 3, h/H, w/W]."""
        pred = prepare(self.task, pred, target, 3, 3, self.convention)
        vectors, valid = compared_vectors(target, self.convention, self.paper_vectors)
        angle = angles_degrees(pred.permute(0, 2, 3, 1)[valid], vectors.permute(0, 2, 3, 1)[valid])
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
