"""Tiny-Taskonomy in the official layout: ``<root>/<building>/<domain>/point_<p>_view_<v>_domain_<domain>.png``.

Decodings (the published encodings, read the way the AdaShare/DiSparse Taskonomy loaders read them,
then put into this library's sample format; see :mod:`adapmtl.data.base`):

- ``rgb``: 8-bit RGB PNG.
- ``segment_semantic``: 8-bit one-channel PNG. Raw 0 = unlabelled -> 255 (ignore); raw k in 1..17
  -> class k-1, so 17 classes. Raw > 17 is an error. (AdaShare builds a mask for raw 0 but never
  applies it: it merges raw 0 into class 0 and weights its cross-entropy by the class priors in
  ``semseg_prior_factor.npy``. We ignore unlabelled pixels instead, so the Taskonomy
  cross-entropy here is not numerically comparable with the paper's table.)
- ``depth_zbuffer``: 16-bit PNG, metres x 512; raw >= 64500 is invalid -> 0. Metres = raw / 512.
  (AdaShare trains on log(1 + raw) / log(2^16) instead; metres keep the units honest, and a user
  can take the log in the loss.)
- ``normal``: 8-bit RGB PNG, 127-centred: n = raw / 255 * 2 - 1 per channel (x, y, z), renormalised
  to unit length. Its validity is the depth mask (as in AdaShare/DiSparse), so the normal task
  needs the sample's ``depth_zbuffer`` file too; invalid normals are (0, 0, 0).
- ``keypoints2d``: 16-bit PNG; value = clip(raw / 2^16 / 0.005, 0, 1).
- ``edge_texture``: 16-bit PNG; value = clip(raw / 2^16 / 0.08, 0, 1).
  (AdaShare/DiSparse clip raw / 2^16 to [0, 0.005] resp. [0, 0.08] and map that linearly to
  [-1, 1]; we map the same interval to [0, 1].)

Splits are lists of buildings: pass the names, ``"tiny"`` (:data:`TINY_SPLIT`), or a file: the
official CSV (rows ``name,train,val,test`` with 1/0 flags, e.g. ``train_val_test_tiny.csv``) or a
text file with one building per line (all of them in the requested split). With none of these,
``<root>/splits.csv`` (official CSV format) is used if present. A split with no usable sample
is a :class:`DatasetError` when the dataset is built, naming the root and the buildings.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from adapmtl.data.base import (
    DatasetError,
    MultitaskDataset,
    Transform,
    check_same_size,
    check_tasks,
    config_root,
    dataset_root,
    read_png,
    to_sample,
    unit_normals,
)
from adapmtl.data.registry import register_dataset
from adapmtl.tasks import DATASET_TASKS, IGNORE_INDEX, SEGMENTATION_CLASSES

TASKONOMY_TASKS = DATASET_TASKS["taskonomy"]
TASKONOMY_CLASSES = SEGMENTATION_CLASSES["taskonomy"]
DEPTH_SCALE = 512.0
DEPTH_INVALID = 64500
KEYPOINT_RANGE = 0.005
EDGE_RANGE = 0.08
SPLIT_FILE = "splits.csv"
_RGB_NAME = re.compile(r"^point_(\d+)_view_(\d+)_domain_rgb\.png$")


def domain_path(root: Path, building: str, point: str, view: str, domain: str) -> Path:
    """Path of one (building, point, view) in ``domain``, official layout."""
    return root / building / domain / f"point_{point}_view_{view}_domain_{domain}.png"


TINY_SPLIT: dict[str, tuple[str, ...]] = {
    "train": (
        "allensville", "beechwood", "benevolence", "coffeen", "cosmos", "forkland", "hanson", "hiteman",
        "klickitat", "lakeville", "leonardo", "lindenwood", "marstons", "merom", "mifflinburg", "newfields",
        "onaga", "pinesdale", "pomaria", "ranchester", "shelbyville", "stockman", "tolstoy", "wainscott",
        "woodbine",
    ),
    "val": ("collierville", "corozal", "darden", "markleeville", "wiconisco"),
    "test": ("ihlen", "mcdade", "muleshoe", "noxapater", "uvalda"),
}
"""The buildings of the Tiny-Taskonomy split (25 train, 5 val, 5 test); ``buildings="tiny"``."""


def read_buildings(source: str | Path | Sequence[str], split: str) -> list[str]:
    """Building names of ``split`` from a list, ``"tiny"``, the official CSV, or a one-per-line text file.

    The official CSV has rows ``name,train,val,test`` with 1/0 flags (a header row is skipped).
    Raises DatasetError if the file is missing, a CSV row is malformed, or ``split`` is not one
    the source has. OSError if the file cannot be read.
    """
    if isinstance(source, str) and source == "tiny":
        if split not in TINY_SPLIT:
            raise DatasetError(f"the tiny split has no {split!r} part; expected one of {list(TINY_SPLIT)}")
        return list(TINY_SPLIT[split])
    if not isinstance(source, (str, Path)):
        return [str(b) for b in source]
    path = Path(source)
    if not path.is_file():
        raise DatasetError(f"{path}: building split file missing")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines or "," not in lines[0]:
        return lines
    if split not in ("train", "val", "test"):
        raise DatasetError(f"{path}: a split CSV has train, val and test columns, not {split!r}")
    column = ("train", "val", "test").index(split) + 1
    rows = [row for row in csv.reader(lines)]
    flags = {"0", "1", "0.0", "1.0", "true", "false"}
    if not all(c.strip().lower() in flags for c in rows[0][1:]):
        rows = rows[1:]  # header
    bad = [i for i, row in enumerate(rows) if len(row) != 4 or not all(c.strip().lower() in flags for c in row[1:])]
    if bad:
        raise DatasetError(f"{path}: row {bad[0] + 1} is not 'name,train,val,test' with 0/1 flags: {rows[bad[0]]}")
    return [row[0].strip() for row in rows if row[column].strip().lower() in ("1", "1.0", "true")]


def encode_taskonomy(task: str, value: np.ndarray) -> np.ndarray:
    """Inverse of the decodings above: a target in the sample format -> the array to save as PNG.

    ``value``: seg int [H, W] (255 ignore), depth float [H, W] metres (0 invalid), normal float
    [H, W, 3], keypoints/edges float [H, W] in [0, 1].
    """
    if task == "segment_semantic":
        return np.where(value == IGNORE_INDEX, 0, value.astype(np.int64) + 1).astype(np.uint8)
    if task == "depth_zbuffer":
        return np.where(value > 0, np.clip(np.rint(value * DEPTH_SCALE), 0, DEPTH_INVALID - 1), 65535).astype(np.uint16)
    if task == "normal":
        return np.clip(np.rint((value + 1.0) * 127.5), 0, 255).astype(np.uint8)
    scale = KEYPOINT_RANGE if task == "keypoints2d" else EDGE_RANGE
    return np.clip(np.rint(value * scale * 65536), 0, 65535).astype(np.uint16)


def decode_taskonomy(task: str, path: Path, depth_path: Path | None = None) -> np.ndarray:
    """Read and decode one Taskonomy file of ``task`` (``"rgb"`` for the image); see module docstring.

    Raises DatasetError naming the file if it is missing, unreadable, of the wrong shape or type,
    holds out-of-range labels, or differs in size from ``depth_path``.
    """
    if task == "rgb":
        return read_png(path, 3, "uint8")
    if task == "segment_semantic":
        raw = read_png(path, 1, "uint8")
        if raw.max() > TASKONOMY_CLASSES:
            raise DatasetError(
                f"{path}: out-of-range labels {np.unique(raw[raw > TASKONOMY_CLASSES])[:8].tolist()}; "
                f"expected 0 (unlabelled) or 1..{TASKONOMY_CLASSES}"
            )
        return np.where(raw == 0, IGNORE_INDEX, raw.astype(np.int64) - 1)
    if task == "depth_zbuffer":
        raw = read_png(path, 1, "uint16")
        return np.where(raw >= DEPTH_INVALID, 0.0, raw / DEPTH_SCALE).astype(np.float32)
    if task == "normal":
        raw = read_png(path, 3, "uint8")
        valid = read_png(depth_path, 1, "uint16") < DEPTH_INVALID if depth_path is not None else np.ones(raw.shape[:2], bool)
        if valid.shape != raw.shape[:2]:
            raise DatasetError(f"{path}: size {raw.shape[:2]} differs from its depth mask {depth_path} {valid.shape}")
        return unit_normals(raw.astype(np.float32) / 255.0 * 2.0 - 1.0, valid)
    scale = KEYPOINT_RANGE if task == "keypoints2d" else EDGE_RANGE
    raw = read_png(path, 1, "uint16")
    return np.clip(raw.astype(np.float32) / 65536.0 / scale, 0.0, 1.0)


@register_dataset("taskonomy")
class Taskonomy(MultitaskDataset):
    """Tiny-Taskonomy, official layout (see module docstring for decodings and split files).

    Args:
        root: the folder holding one sub-folder per building.
        split: ``"train"``, ``"val"`` or ``"test"`` (selects the CSV column; ignored for a list).
        tasks: subset of the five canonical tasks (default all five).
        buildings: building names, ``"tiny"``, or a split file; ``None`` = ``<root>/splits.csv``.
        missing: ``"error"`` (default) raises naming the first missing file and the count;
            ``"skip"`` drops samples lacking a needed file and counts them in ``skipped``.
        transform: e.g. ``TrainTransform(224, resize_to=256)``; ``None`` = full resolution.
        normalize: ``"imagenet"`` (default), ``"bgr_mean"`` (the paper's) or ``"unit"``.
        seed: seeds the transform's random draws.

    Attributes: ``num_classes`` (17), ``task_channels``, ``buildings``, ``samples`` (a list of
    (building, point, view)), ``skipped`` (number of samples dropped), ``missing_files``.

    Raises DatasetError if the folder, split file or a building's ``rgb/`` is missing, an argument
    is unknown, a file is missing with ``missing="error"``, or the split has no samples.
    ``load`` raises DatasetError naming a missing or damaged file.
    """

    metric_set = "taskonomy"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        buildings: str | Path | Sequence[str] | None = None,
        missing: str = "error",
        transform: Transform | None = None,
        normalize: str = "imagenet",
        seed: int = 0,
    ) -> None:
        super().__init__(transform, seed, normalize)
        self.root = dataset_root(root)
        if missing not in ("error", "skip"):
            raise DatasetError(f"missing must be 'error' or 'skip', got {missing!r}")
        self.split = split
        self.tasks = check_tasks(tasks, TASKONOMY_TASKS, "Taskonomy")
        self.num_classes = TASKONOMY_CLASSES
        if buildings is None:
            if not (self.root / SPLIT_FILE).is_file():
                raise DatasetError(f"{self.root}: no buildings given and no {SPLIT_FILE}; pass buildings=[...] or a split file")
            buildings = self.root / SPLIT_FILE
        self.buildings = read_buildings(buildings, split)
        if not self.buildings:
            raise DatasetError(f"{self.root}: no buildings in split {split!r}")
        domains = set(self.tasks) | ({"depth_zbuffer"} if "normal" in self.tasks else set())
        self.samples: list[tuple[str, str, str]] = []
        self.missing_files: list[Path] = []
        for building in self.buildings:
            rgb_dir = self.root / building / "rgb"
            if not rgb_dir.is_dir():
                raise DatasetError(f"{rgb_dir}: missing folder for building {building!r}")
            present = {d: set(p.name for p in (self.root / building / d).glob("*.png")) for d in domains}
            for name in sorted(p.name for p in rgb_dir.glob("*.png")):
                match = _RGB_NAME.match(name)
                if match is None:
                    continue
                point, view = match.groups()
                lacking = [d for d in sorted(domains) if domain_path(self.root, building, point, view, d).name not in present[d]]
                if lacking:
                    self.missing_files += [domain_path(self.root, building, point, view, d) for d in lacking]
                else:
                    self.samples.append((building, point, view))
        self.skipped = len({p.name.split("_domain_")[0] + str(p.parent.parent) for p in self.missing_files})
        if self.missing_files and missing == "error":
            raise DatasetError(
                f"{self.missing_files[0]}: missing file ({len(self.missing_files)} missing in all, "
                f"{self.skipped} samples affected); pass missing='skip' to drop those samples"
            )
        if not self.samples:
            why = (
                f"all {self.skipped} samples lack a file (e.g. {self.missing_files[0]}) and missing='skip' dropped them"
                if self.missing_files else "they hold no rgb/point_<p>_view_<v>_domain_rgb.png"
            )
            raise DatasetError(f"{self.root}: split {split!r} (buildings {self.buildings}) has no samples: {why}")

    @classmethod
    def from_config(cls, data: Any, split: str, transform: Transform | None, seed: int) -> "Taskonomy":
        """``data.root`` with ``data.tasks``, the buildings of ``data.buildings`` and ``data.missing``.

        Raises DatasetError if ``data.root`` is not set or the split cannot be read.
        """
        return cls(config_root(data), split, tasks=data.tasks, buildings=data.buildings, missing=data.missing,
                   transform=transform, normalize=data.normalize, seed=seed)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> dict[str, torch.Tensor]:
        """Sample ``index`` decoded at full resolution. Raises DatasetError naming a file that is
        missing, unreadable, of the wrong shape or type, out of range, or of another size."""
        building, point, view = self.samples[index]
        paths = {d: domain_path(self.root, building, point, view, d) for d in ("rgb",) + TASKONOMY_TASKS}
        arrays = {"rgb": decode_taskonomy("rgb", paths["rgb"])}
        for task in self.tasks:
            arrays[task] = decode_taskonomy(task, paths[task], paths["depth_zbuffer"])
        check_same_size(arrays, paths)
        rgb = arrays.pop("rgb")
        return to_sample(rgb, arrays, self.normalize)
