"""Semantic segmentation: cross-entropy with an ignore label; mIoU from one confusion matrix."""
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
    check_convention,
    check_shapes,
    nearest_resize,
    prepare,
)

IGNORE_INDEX = 255
"""The segmentation label that losses and metrics ignore (every dataset maps its unlabelled pixels to it)."""
MiouOver = Literal["present", "all", "with_tp"]
MIOU_CONVENTIONS: tuple[str, ...] = get_args(MiouOver)
DEFAULT_MIOU_OVER: Mapping[str, MiouOver] = MappingProxyType({"paper": "with_tp", "corrected": "present"})
"""The classes mIoU averages over when `miou_over` is not given, by convention."""


def default_miou_over(convention: Convention) -> MiouOver:
    """The classes mIoU averages over by default: "with_tp" under "paper" (what the AdaShare,
    DiSparse and AdapMTL evaluation code averages over), "present" under "corrected".
    Raises TaskError for an unknown convention."""
    return DEFAULT_MIOU_OVER[check_convention(SegmentationTask.name, convention)]


class SegmentationTask(Task):
    """`segment_semantic`: logits [B, K, h, w] against labels int64 [B, H, W] (255 = ignore).

    loss: cross-entropy averaged over non-ignored pixels (weighted by `class_weights`
    if given, as `torch.nn.functional.cross_entropy` does); 0 for a batch with none.
    Metrics: `miou` and `pixel_acc` in percent from a confusion matrix over the whole set;
    `cross_entropy` in nats per non-ignored pixel (with the same class weights).
    miou_over: which classes mIoU averages over —
      "with_tp": only classes with at least one true positive (TP > 0). This is the
          convention of AdaShare, DiSparse and AdapMTL: their evaluation code appends a
          class's IoU only `if not conf_mat[i, i] == 0`. A class that occurs but is never
          hit is left out, which raises mIoU (40 classes, 10 never hit: the same IoUs give
          12.35 % over the 30 with a TP and 9.26 % over the 40 present);
      "present": classes with a non-zero union (in the targets or the predictions);
      "all": all K classes, a class with an empty union counting as IoU 0;
      None (default): the convention's — "with_tp" under "paper", "present" under "corrected".
    convention (see `adapmtl.tasks.CONVENTIONS`): also how a prediction at another
      resolution meets the labels — "corrected": logits upsampled bilinearly for loss and
      metrics; "paper": the loss at the logits' resolution against labels resized by
      nearest neighbour, the metrics on nearest-upsampled logits.
    """

    name = "segment_semantic"
    supported_metrics = ("miou", "pixel_acc", "cross_entropy")
    fill_value = IGNORE_INDEX

    def __init__(
        self,
        num_classes: int,
        metrics: Sequence[str] = ("miou", "pixel_acc"),
        *,
        class_weights: Tensor | Sequence[float] | None = None,
        miou_over: MiouOver | None = None,
        convention: Convention = DEFAULT_CONVENTION,
    ) -> None:
        """Raises TaskError for bad `metrics`, `num_classes` < 2 or not an int, an unknown
        `miou_over` or `convention`, or `class_weights` without `num_classes` entries."""
        super().__init__(metrics, convention=convention)
        if miou_over is None:
            miou_over = default_miou_over(self.convention)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise TaskError(f"{self.name}: num_classes must be an int ≥ 2, got {num_classes!r}")
        if miou_over not in MIOU_CONVENTIONS:
            raise TaskError(f"{self.name}: miou_over must be one of {list(MIOU_CONVENTIONS)}, got {miou_over!r}")
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
            if class_weights.shape != (num_classes,):
                raise TaskError(
                    f"{self.name}: class_weights must have {num_classes} entries, got shape {list(class_weights.shape)}"
                )
        self.out_channels = num_classes
        self.class_weights = class_weights
        self.miou_over = miou_over

    def _check(self, pred: Tensor, target: Tensor, for_loss: bool = False) -> tuple[Tensor, Tensor]:
        """(logits, labels) as the loss (`for_loss`) or the metrics compare them, after the checks."""
        pred = check_shapes(self.name, pred, target, self.out_channels, None)
        if target.dtype != torch.int64:
            raise TaskError(f"{self.name}: target must be int64 class labels, got {target.dtype}")
        bad = (target != IGNORE_INDEX) & ((target < 0) | (target >= self.out_channels))
        if bool(bad.any()):
            raise TaskError(
                f"{self.name}: labels must lie in [0, {self.out_channels}) or be {IGNORE_INDEX} (ignore); "
                f"found {sorted(set(target[bad].unique().tolist()))[:10]}"
            )
        if for_loss and self.convention == "paper":
            return pred, nearest_resize(target, tuple(pred.shape[-2:]))
        return prepare(self.name, pred, target, self.out_channels, None, self.convention), target

    def _weights(self, pred: Tensor) -> Tensor | None:
        return None if self.class_weights is None else self.class_weights.to(pred.device, pred.dtype)

    def _cross_entropy_sum(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(Σ weighted CE, Σ weights) over non-ignored pixels."""
        weights = self._weights(pred)
        total = F.cross_entropy(pred, target, weight=weights, ignore_index=IGNORE_INDEX, reduction="sum")
        valid = target != IGNORE_INDEX
        norm = valid.sum().to(pred.dtype) if weights is None else weights[target[valid]].sum()
        return total, norm

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy over non-ignored pixels (scalar). Raises TaskError if the shapes are wrong,
        `target` is not int64, or a label is outside [0, K) and not 255."""
        pred, target = self._check(pred, target, for_loss=True)
        total, norm = self._cross_entropy_sum(pred, target)
        return total / norm.clamp(min=torch.finfo(norm.dtype).tiny)

    def accumulator(self) -> "SegmentationMetrics":
        """A fresh confusion-matrix accumulator for this task."""
        return SegmentationMetrics(self)


class SegmentationMetrics(MetricAccumulator):
    """Confusion matrix (rows: target, columns: prediction) and cross-entropy sums."""

    def __init__(self, task: SegmentationTask) -> None:
        """Accumulates `task`'s metrics (its classes, weights and mIoU convention)."""
        super().__init__(task.name, task.metrics, task.convention)
        self.spec = task

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch of logits [B, K, h, w] and labels int64 [B, H, W]. Raises TaskError if the
        shapes are wrong, `target` is not int64, or a label is outside [0, K) and not 255."""
        pred, target = self.spec._check(pred, target)
        k = self.spec.out_channels
        valid = target != IGNORE_INDEX
        if not bool(valid.any()):
            return
        labels = pred.argmax(dim=1)[valid]
        pairs = target[valid] * k + labels
        self._add("confusion", torch.bincount(pairs, minlength=k * k).view(k, k))
        if "cross_entropy" in self.metrics:
            total, norm = self.spec._cross_entropy_sum(pred, target)
            self._add("ce_sum", total.double())
            self._add("ce_norm", norm.double())

    def compute(self) -> dict[str, float]:
        """{metric: value} over the set. Raises TaskError if no non-ignored pixel was seen."""
        self._require_data()
        confusion = self.state["confusion"].double()
        values = {"pixel_acc": as_float(confusion.diagonal().sum() / confusion.sum() * 100.0)}
        values["miou"] = miou(confusion, self.spec.miou_over)
        if "cross_entropy" in self.metrics:
            values["cross_entropy"] = as_float(self.state["ce_sum"] / self.state["ce_norm"])
        return {m: values[m] for m in self.metrics}


def miou(confusion: Tensor, over: MiouOver = "present") -> float:
    """Mean IoU in percent from a [K, K] confusion matrix (rows: target, columns: prediction).

    IoU_c = TP_c / (TP_c + FP_c + FN_c); `over` picks the classes averaged: "present"
    (non-zero union), "all" (K), "with_tp" (TP > 0, the AdaShare/DiSparse/AdapMTL code's; see
    `SegmentationTask`). 0 when no class qualifies.
    """
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1.0), torch.zeros_like(tp))
    if over == "all":
        keep = torch.ones_like(tp, dtype=torch.bool)
    elif over == "present":
        keep = union > 0
    else:
        keep = tp > 0
    if not bool(keep.any()):
        return 0.0
    return as_float(iou[keep].mean() * 100.0)
