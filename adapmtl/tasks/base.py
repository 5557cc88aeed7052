"""What every task shares: the Task interface, streaming metric state, shape checks, and the
two computation conventions (`adapmtl.conventions.CONVENTIONS`).

How a task computes its loss and metrics where the original code differs from the correct computation.

"paper": as the AdapMTL code (ACM MM 2024) and the AdaShare/DiSparse code it builds on do, for
    numbers comparable with the paper's tables:
    - normals (NYU-v2): 1 − cosine and the angles are taken between the raw 0–255 colour
      vectors of prediction and target, each L2-normalised, not between decoded unit
      normals; pixels whose colour has a channel at 255 are dropped (see `NormalTask`).
      Taskonomy's original loader decodes its normals, so there unit normals are compared;
    - mIoU averages over classes with at least one true positive ("with_tp");
    - a prediction at another resolution than its target (the heads' output, e.g. 41×41
      for a 321×321 crop): the loss is computed at the prediction's resolution against
      the target resized by nearest neighbour (PyTorch's legacy "nearest", as the
      original's `F.interpolate(gt, size=pred.shape[-2:])`); metrics are computed after
      resizing the prediction to the target's resolution by nearest neighbour. (This needs
      the model to hand over its heads' output without upsampling it.)
"corrected" (default): decoded unit normals and true angles; mIoU over the classes present
    (in the targets or the predictions); the prediction resized bilinearly
    (align_corners=False) to the target's resolution for both the loss and the metrics.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from adapmtl.conventions import CONVENTIONS, DEFAULT_CONVENTION, Convention
from adapmtl.errors import AdapMTLError
from adapmtl.metrics import HIGHER_IS_BETTER


class TaskError(AdapMTLError, ValueError):
    """A task, its metric set, or a prediction/target pair is not what was expected."""


def check_convention(task: str, convention: object) -> Convention:
    """`convention` if it is one of CONVENTIONS; raises TaskError naming `task` otherwise."""
    if not isinstance(convention, str) or convention not in CONVENTIONS:
        raise TaskError(f"{task}: convention must be one of {list(CONVENTIONS)}, got {convention!r}")
    return convention  # type: ignore[return-value]


class MetricAccumulator(ABC):
    """Streams a task's metrics over a whole evaluation set.

    `update(pred, target)` once per batch (no gradients are kept), `compute()` at the end
    → {metric: float}. Every tensor in `state` is a sum over batches, so distributed
    evaluation can all-reduce each with SUM before `compute()`. `reset()` starts over.
    """

    def __init__(self, task: str, metrics: tuple[str, ...], convention: Convention = DEFAULT_CONVENTION) -> None:
        """Raises TaskError if `convention` is not one of CONVENTIONS (how a prediction at another
        resolution is resized to the target: see CONVENTIONS)."""
        self.task = task
        self.metrics = metrics
        self.convention = check_convention(task, convention)
        self.state: dict[str, Tensor] = {}

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self.state = {}

    def _add(self, name: str, value: Tensor) -> None:
        value = value.detach()
        self.state[name] = self.state[name] + value if name in self.state else value.clone()

    def _require_data(self) -> None:
        if not self.state:
            raise TaskError(f"{self.task}: no valid pixels were accumulated; call update() with data first")

    @abstractmethod
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch: model output and target as the task documents them.

        Raises TaskError if their shapes (or, for segmentation, labels) are not what the task expects.
        """

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The requested metrics over everything seen, in `self.metrics` order.

        Raises TaskError if no valid pixel was accumulated.
        """


class Task(ABC):
    """One task: its loss, a fresh metric accumulator, and its metrics' directions.

    A task's facts sit on its class: `name` (canonical), `supported_metrics`,
    `out_channels` (a class attribute where it does not depend on the dataset) and
    `fill_value`, what its target holds where it carries nothing (padding, ignored or
    invalid pixels). `convention` ("paper" or "corrected", see CONVENTIONS) says how the
    loss and metrics are computed where the original code differs from the correct way.
    """

    name: ClassVar[str]
    supported_metrics: ClassVar[tuple[str, ...]]
    fill_value: ClassVar[float]
    out_channels: int

    def __init__(self, metrics: str | Sequence[str], *, convention: Convention = DEFAULT_CONVENTION) -> None:
        """Raises TaskError if `metrics` is empty, repeats a name, or names one not in `supported_metrics`,
        or if `convention` is not one of CONVENTIONS."""
        self.convention = check_convention(self.name, convention)
        metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
        unknown = [m for m in metrics if m not in self.supported_metrics]
        if not metrics or unknown or len(set(metrics)) != len(metrics):
            raise TaskError(
                f"{self.name}: metrics must be distinct names from {list(self.supported_metrics)}, got {list(metrics)}"
            )
        self.metrics = metrics

    @property
    def directions(self) -> dict[str, bool]:
        """{metric: True if higher is better}, for `adapmtl.metrics.delta_t`."""
        return {m: HIGHER_IS_BETTER[m] for m in self.metrics}

    @abstractmethod
    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """The training loss of one batch: a scalar tensor with gradients to `pred`.

        Raises TaskError if `pred` or `target` has the wrong shape (or, for segmentation, labels).
        """

    @abstractmethod
    def accumulator(self) -> MetricAccumulator:
        """A fresh accumulator of this task's metrics."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(out_channels={self.out_channels}, metrics={list(self.metrics)}, "
            f"convention={self.convention!r})"
        )


def check_shapes(task: str, pred: Tensor, target: Tensor, channels: int, target_channels: int | None) -> Tensor:
    """Check a [B, C, h, w] prediction against its target; return it, half precision cast to float32
    (so that sums over millions of pixels cannot overflow), at its own resolution.

    target_channels: the target's channel count, or None for a [B, H, W] label map.
    Raises TaskError naming `task` if `pred` is not [B, channels, h, w] or `target` has the
    wrong shape or batch size.
    """
    if pred.dim() != 4 or pred.shape[1] != channels:
        raise TaskError(f"{task}: prediction must be [B, {channels}, h, w], got {list(pred.shape)}")
    expected = "[B, H, W]" if target_channels is None else f"[B, {target_channels}, H, W]"
    target_ok = target.dim() == 3 if target_channels is None else (target.dim() == 4 and target.shape[1] == target_channels)
    if not target_ok or target.shape[0] != pred.shape[0]:
        raise TaskError(
            f"{task}: target must be {expected} with the prediction's batch size {pred.shape[0]}, got {list(target.shape)}"
        )
    if pred.dtype in (torch.float16, torch.bfloat16):
        pred = pred.float()
    return pred


def prepare(
    task: str,
    pred: Tensor,
    target: Tensor,
    channels: int,
    target_channels: int | None,
    convention: Convention = DEFAULT_CONVENTION,
) -> Tensor:
    """Check a [B, C, h, w] prediction against its target; return it at the target's resolution [B, C, H, W]
    (what the metrics compare).

    target_channels: the target's channel count, or None for a [B, H, W] label map.
    A prediction at another resolution (e.g. a head's native one) is resized to the target's:
    bilinearly (align_corners=False, as the models upsample) under "corrected"; by nearest
    neighbour (PyTorch's legacy "nearest", as the original evaluation code) under "paper".
    Half-precision predictions are cast to float32 first.
    Raises TaskError naming `task` if `pred` is not [B, channels, h, w] or `target` has the
    wrong shape or batch size.
    """
    pred = check_shapes(task, pred, target, channels, target_channels)
    size = target.shape[-2:]
    if pred.shape[-2:] != size:
        if convention == "paper":
            pred = F.interpolate(pred, size=size, mode="nearest")
        else:
            pred = F.interpolate(pred, size=size, mode="bilinear", align_corners=False)
    return pred


def prepare_loss(
    task: str,
    pred: Tensor,
    target: Tensor,
    channels: int,
    target_channels: int | None,
    convention: Convention = DEFAULT_CONVENTION,
) -> tuple[Tensor, Tensor]:
    """Check a prediction against its target; return the (prediction, target) pair a loss compares.

    "corrected": the prediction resized bilinearly to the target's resolution [B, C, H, W], the
    target unchanged. "paper": the prediction unchanged [B, C, h, w], the target resized to
    the prediction's resolution by nearest neighbour (PyTorch's legacy "nearest": source
    index floor(i · H / h), as the original's `F.interpolate(gt.float(), size=pred.shape[-2:])`);
    a label map [B, H, W] keeps its dtype. Half-precision predictions are cast to float32.
    Raises TaskError naming `task` as `prepare` does.
    """
    if convention != "paper":
        return prepare(task, pred, target, channels, target_channels, convention), target
    pred = check_shapes(task, pred, target, channels, target_channels)
    return pred, nearest_resize(target, tuple(pred.shape[-2:]))


def nearest_resize(target: Tensor, size: tuple[int, int]) -> Tensor:
    """A target [B, C, H, W] or label map [B, H, W] at `size` (h, w) by PyTorch's legacy nearest
    neighbour; unchanged if already that size. Labels go through float32 (exact up to 2^24) and
    keep their dtype."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    if target.dim() == 3:
        return F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].to(target.dtype)
    return F.interpolate(target.float(), size=size, mode="nearest").to(target.dtype)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` where `mask` is true; 0 (still differentiable) where nothing is valid."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def as_float(value: Tensor) -> float:
    """A one-element tensor as a Python float."""
    return float(value.item())


def count(mask: Tensor) -> Tensor:
    """Number of true entries, as an int64 tensor on the mask's device."""
    return mask.sum(dtype=torch.int64)
