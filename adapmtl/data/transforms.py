"""Joint transforms: one random draw applied to the image and every target of a sample.

Both transforms are callables ``(sample, rng) -> sample`` on the sample dicts of
:mod:`adapmtl.data.base`; datasets pass them a seeded ``numpy.random.Generator``.
The image is resized bilinearly; targets nearest-neighbour (so labels stay labels and
the invalid encodings stay exact).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from adapmtl.data.base import DatasetError, normalize_image
from adapmtl.tasks import FILL_VALUES

PAD_VALUES: Mapping[str, float] = {"image": 0.0, **FILL_VALUES}  # image: the mean colour after normalisation
"""What padding holds per key: each task's fill value (ignore/invalid for targets that have one, 0 otherwise)."""


def _size(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def resize(sample: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Resize every entry to ``size`` = (H, W): image bilinear, targets nearest."""
    out = {}
    for key, value in sample.items():
        x = value[None, None] if value.ndim == 2 else value[None]
        if key == "image":
            y = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        else:
            y = F.interpolate(x.float(), size=size, mode="nearest-exact").to(value.dtype)
        out[key] = y[0, 0] if value.ndim == 2 else y[0]
    return out


def hflip(sample: dict[str, torch.Tensor], negate_normal_x: bool = True) -> dict[str, torch.Tensor]:
    """Mirror left-right. A mirrored surface's normal points the other way in x, so its x component
    is negated (invalid (0,0,0) stays (0,0,0)); `negate_normal_x=False` mirrors the normal map as an
    image only, as the original AdapMTL/AdaShare code does (the "paper" convention)."""
    out = {key: value.flip(-1) for key, value in sample.items()}
    if "normal" in out and negate_normal_x:
        out["normal"] = out["normal"] * torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1) + 0.0
    return out


def crop_or_pad(
    sample: dict[str, torch.Tensor], size: tuple[int, int], rng: np.random.Generator,
    image_pad: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Pad (centred) to at least ``size`` with :data:`PAD_VALUES`, then crop ``size`` at a random offset.
    ``image_pad`` [3]: the image's padding per channel instead (e.g. black after normalisation)."""
    height, width = next(iter(sample.values())).shape[-2:]
    crop_h, crop_w = size
    pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
    top = int(rng.integers(0, max(height + pad_h - crop_h, 0) + 1))
    left = int(rng.integers(0, max(width + pad_w - crop_w, 0) + 1))
    out = {}
    for key, value in sample.items():
        if (pad_h or pad_w) and key == "image" and image_pad is not None:
            padded = image_pad.to(value.dtype).view(-1, 1, 1).expand(value.shape[0], height + pad_h, width + pad_w)
            value = _paste(padded.clone(), value, pad_h // 2, pad_w // 2)
        elif pad_h or pad_w:
            padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
            value = F.pad(value, padding, value=PAD_VALUES.get(key, 0.0))
        out[key] = value[..., top : top + crop_h, left : left + crop_w].contiguous()
    return out


def _paste(canvas: torch.Tensor, value: torch.Tensor, top: int, left: int) -> torch.Tensor:
    canvas[..., top : top + value.shape[-2], left : left + value.shape[-1]] = value
    return canvas


class TrainTransform:
    """Training augmentation (the paper's recipe): random scale, horizontal flip, random crop/pad.

    Args:
        crop: output size (H, W) or one int for a square (NYU-v2 recipe: 321; Taskonomy: 224).
        scale: range of the random scale factor (uniform), default (0.5, 1.5); ``None`` = no scaling.
        flip: mirror with probability 0.5 (normals' x negated unless ``negate_normal_x`` is False).
        resize_to: resize to this size first (Taskonomy recipe: 256), or ``None``.
        image_pad: the padded image pixels' value per channel [3] (default: 0, the mean colour after
            normalisation; the original code pads the raw image with black, see `black_after`).
        negate_normal_x: negate the normals' x on a flip (True: correct; False: the original code).

    Raises DatasetError if ``crop`` is not positive or ``scale`` is not (low, high) with 0 < low <= high.
    """

    def __init__(
        self,
        crop: int | tuple[int, int],
        scale: tuple[float, float] | None = (0.5, 1.5),
        flip: bool = True,
        resize_to: int | tuple[int, int] | None = None,
        image_pad: torch.Tensor | None = None,
        negate_normal_x: bool = True,
    ) -> None:
        self.crop = _size(crop)
        if min(self.crop) < 1:
            raise DatasetError(f"TrainTransform: crop must be positive (height, width), got {crop!r}")
        if scale is not None and not (len(scale) == 2 and 0 < scale[0] <= scale[1]):
            raise DatasetError(f"TrainTransform: scale must be (low, high) with 0 < low <= high, got {scale!r}")
        self.scale = scale
        self.flip = flip
        self.resize_to = None if resize_to is None else _size(resize_to)
        self.image_pad = image_pad
        self.negate_normal_x = negate_normal_x

    def __call__(self, sample: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if self.resize_to is not None:
            sample = resize(sample, self.resize_to)
        if self.scale is not None:
            factor = float(rng.uniform(*self.scale))
            height, width = next(iter(sample.values())).shape[-2:]
            sample = resize(sample, (max(int(height * factor), 1), max(int(width * factor), 1)))
        if self.flip and rng.random() < 0.5:
            sample = hflip(sample, self.negate_normal_x)
        return crop_or_pad(sample, self.crop, rng, self.image_pad)

    def __repr__(self) -> str:
        return f"TrainTransform(crop={self.crop}, scale={self.scale}, flip={self.flip}, resize_to={self.resize_to})"


def black_after(normalize: str) -> torch.Tensor:
    """[3]: a black pixel (RGB 0, 0, 0) after the image normalisation `normalize` (what the original
    code's padding holds: it pads the raw image with 0, then subtracts the mean). Raises
    DatasetError for an unknown normalisation."""
    return normalize_image(np.zeros((1, 1, 3), dtype=np.uint8), normalize).reshape(3)


class EvalTransform:
    """Evaluation: full resolution (``size=None``) or a deterministic resize to ``size`` (H, W)."""

    def __init__(self, size: int | tuple[int, int] | None = None) -> None:
        self.size = None if size is None else _size(size)

    def __call__(self, sample: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return sample if self.size is None else resize(sample, self.size)

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"
