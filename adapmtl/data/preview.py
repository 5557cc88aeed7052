"""A picture of samples: one row per sample, one column per task, with colour maps and titles."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from adapmtl.data.base import denormalize_image
from adapmtl.tasks import IGNORE_INDEX

_LABEL_COLOURS = np.array(
    [
        [140, 100, 60], [200, 195, 180], [240, 240, 235], [60, 90, 170], [170, 80, 50],
        [220, 50, 50], [50, 170, 80], [240, 190, 40], [150, 60, 170], [40, 170, 170],
    ],
    dtype=np.uint8,
)
# anchors of a perceptual "near = bright yellow, far = dark blue" colour map
_DEPTH_ANCHORS = np.array([[253, 231, 37], [94, 201, 98], [33, 145, 140], [59, 82, 139], [68, 1, 84]], dtype=np.float64)
_COLUMNS = (
    ("image", "image"),
    ("segment_semantic", "labels"),
    ("depth_zbuffer", "depth"),
    ("normal", "normals"),
    ("edge_texture", "edges"),
    ("keypoints2d", "keypoints"),
)


def colorize(task: str, value: torch.Tensor, image: np.ndarray | None = None) -> np.ndarray:
    """A uint8 RGB [H, W, 3] view of one target tensor (invalid/ignored pixels black)."""
    x = value.detach().cpu().numpy()
    if task == "segment_semantic":
        rgb = _LABEL_COLOURS[np.where(x == IGNORE_INDEX, 0, x) % len(_LABEL_COLOURS)]
        return np.where((x == IGNORE_INDEX)[..., None], 0, rgb).astype(np.uint8)
    if task == "depth_zbuffer":
        d = x[0]
        valid = d > 0
        lo, hi = (d[valid].min(), d[valid].max()) if valid.any() else (0.0, 1.0)
        s = np.clip((d - lo) / max(hi - lo, 1e-6), 0, 1) * (len(_DEPTH_ANCHORS) - 1)
        i = np.minimum(s.astype(int), len(_DEPTH_ANCHORS) - 2)
        f = (s - i)[..., None]
        rgb = _DEPTH_ANCHORS[i] * (1 - f) + _DEPTH_ANCHORS[i + 1] * f
        return np.where(valid[..., None], rgb, 0).astype(np.uint8)
    if task == "normal":
        n = x.transpose(1, 2, 0)
        valid = np.abs(n).sum(-1) > 0
        return np.where(valid[..., None], (n + 1) / 2 * 255, 0).astype(np.uint8)
    grey = np.clip(x[0], 0, 1)
    if task == "keypoints2d" and image is not None:
        heat = np.stack([np.ones_like(grey), grey * 0.3, np.zeros_like(grey)], -1) * 255
        return (image * 0.45 * (1 - grey[..., None]) + heat * grey[..., None]).astype(np.uint8)
    return (np.repeat(grey[..., None], 3, -1) * 255).astype(np.uint8)


def save_preview(samples: Sequence[dict[str, torch.Tensor]], path: str | Path, normalize: str = "imagenet") -> Path:
    """Write a PNG grid: a row per sample; columns image, labels, depth, normals, edges, keypoints
    (those present). ``normalize`` is the image normalisation the samples were made with.
    Raises OSError if ``path`` cannot be written."""
    columns = [(key, title) for key, title in _COLUMNS if key in samples[0]]
    height, width = samples[0]["image"].shape[-2:]
    gap, header = 4, 16
    canvas = Image.new("RGB", (len(columns) * (width + gap) + gap, header + len(samples) * (height + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (_, title) in enumerate(columns):
        draw.text((gap + c * (width + gap) + 2, 2), title, fill=(0, 0, 0))
    for r, sample in enumerate(samples):
        image = denormalize_image(sample["image"], normalize)
        for c, (key, _) in enumerate(columns):
            tile = image if key == "image" else colorize(key, sample[key], image)
            canvas.paste(Image.fromarray(tile), (gap + c * (width + gap), header + r * (height + gap)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    return path
