"""Validate a dataset folder: format, counts per split, shapes, value ranges, missing or unreadable files."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from adapmtl.data.base import DatasetError, MultitaskDataset, dataset_root
from adapmtl.data.nyuv2 import ADASHARE_JSON, NYUv2, detect_nyuv2_format
from adapmtl.data.taskonomy import SPLIT_FILE, Taskonomy
from adapmtl.tasks import IGNORE_INDEX
from adapmtl.tasks.normal import valid_normals


@dataclass
class SplitStats:
    """What was found in one split: sample count, image sizes and value ranges over readable samples."""

    count: int = 0
    checked: int = 0
    sizes: set = field(default_factory=set)
    labels: set = field(default_factory=set)
    ignored: float = 0.0  # fraction of seg pixels that are IGNORE_INDEX
    depth_range: tuple[float, float] = (np.inf, -np.inf)  # over valid pixels, metres
    depth_invalid: float = 0.0
    normal_invalid: float = 0.0


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`; ``ok`` is true when no problem was found."""

    root: Path
    format: str
    splits: dict[str, SplitStats] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def summary(self) -> str:
        """A human-readable multi-line summary."""
        lines = [f"{self.root}: {self.format}"]
        for name, s in self.splits.items():
            sizes = ", ".join(f"{h}x{w}" for h, w in sorted(s.sizes)) or "-"
            line = f"  {name:<9} {s.count:>6} samples ({s.checked} read)  size {sizes}"
            if s.labels:
                line += f"  labels {min(s.labels)}..{max(s.labels)} ({len(s.labels)} seen, {100 * s.ignored:.1f} % ignore)"
            if np.isfinite(s.depth_range[0]):
                line += f"  depth {s.depth_range[0]:.2f}..{s.depth_range[1]:.2f} m ({100 * s.depth_invalid:.1f} % invalid)"
            if s.normal_invalid:
                line += f"  normals {100 * s.normal_invalid:.1f} % invalid"
            lines.append(line)
        lines.append(f"{len(self.problems)} problem(s)" + (":" if self.problems else ""))
        lines += [f"  {p}" for p in self.problems[:50]]
        if len(self.problems) > 50:
            lines.append(f"  ... and {len(self.problems) - 50} more")
        return "\n".join(lines)


def detect_format(root: Path) -> str:
    """``"nyuv2-adashare"``, ``"nyuv2-mtan"`` or ``"taskonomy"`` (a split file or building folders with ``rgb/``).

    Raises :class:`DatasetError` naming ``root`` and the expected layouts if it is none of them.
    """
    if (root / ADASHARE_JSON).is_file() or (root / "train" / "image").is_dir():
        return f"nyuv2-{detect_nyuv2_format(root)}"
    if (root / SPLIT_FILE).is_file() or any((p / "rgb").is_dir() for p in root.iterdir() if p.is_dir()):
        return "taskonomy"
    raise DatasetError(
        f"{root}: unknown dataset format; expected {ADASHARE_JSON}, train/image/ (MTAN), "
        f"{SPLIT_FILE} or <building>/rgb/ folders (Taskonomy)"
    )


def _scan(dataset: MultitaskDataset, stats: SplitStats, problems: list[str], limit: int | None, desc: str) -> None:
    n = len(dataset) if limit is None else min(limit, len(dataset))
    seg_pixels = ignored = depth_pixels = depth_invalid = normal_pixels = normal_invalid = 0
    lo, hi = stats.depth_range
    for i in tqdm(range(n), desc=desc, leave=False, disable=n < 50):
        try:
            sample = dataset.load(i)
        except DatasetError as error:
            problems.append(str(error))
            continue
        stats.checked += 1
        stats.sizes.add(tuple(sample["image"].shape[-2:]))
        if "segment_semantic" in sample:
            seg = sample["segment_semantic"].numpy()
            stats.labels.update(np.unique(seg[seg != IGNORE_INDEX]).tolist())
            seg_pixels, ignored = seg_pixels + seg.size, ignored + int((seg == IGNORE_INDEX).sum())
        if "depth_zbuffer" in sample:
            depth = sample["depth_zbuffer"].numpy()
            valid = depth[depth > 0]
            if valid.size:
                lo, hi = min(lo, float(valid.min())), max(hi, float(valid.max()))
            depth_pixels, depth_invalid = depth_pixels + depth.size, depth_invalid + depth.size - valid.size
        if "normal" in sample:
            bad = (~valid_normals(sample["normal"][None])[0]).numpy()
            normal_pixels, normal_invalid = normal_pixels + bad.size, normal_invalid + int(bad.sum())
    stats.depth_range = (lo, hi)
    stats.ignored = ignored / max(seg_pixels, 1)
    stats.depth_invalid = depth_invalid / max(depth_pixels, 1)
    stats.normal_invalid = normal_invalid / max(normal_pixels, 1)
    if n < len(dataset):
        return  # a sample not read may hold valid pixels
    for task, pixels, invalid in (("segment_semantic", seg_pixels, ignored), ("depth_zbuffer", depth_pixels, depth_invalid),
                                  ("normal", normal_pixels, normal_invalid)):
        if pixels and invalid == pixels:
            problems.append(
                f"split {desc}: no valid {task} pixel in any of its {stats.checked} readable samples; "
                f"its {task} loss is always 0 and its metrics cannot be computed"
            )


def check_dataset(root: str | Path, limit: int | None = None) -> CheckReport:
    """Read every sample (or the first ``limit`` per split) of the dataset at ``root`` and report.

    NYU-v2: counts and reads train, val (carved from train when the format has none) and test.
    Taskonomy: counts and reads each split of ``splits.csv``, or all building folders as one
    split ``"all"`` when there is none; missing files are reported, not fatal.

    Problems reported: everything training would fail on later — a split with no samples, a
    file that is missing, unreadable, of the wrong shape or type, values out of the range a
    loss relies on (labels, NaN/inf, depth < 0 or > ``MAX_DEPTH`` m), and, when a whole split
    was read, a task with no valid pixel in it. Raises :class:`DatasetError` only when the
    folder is not a dataset at all.
    """
    root = dataset_root(root)
    report = CheckReport(root, detect_format(root))
    if report.format.startswith("nyuv2"):
        for split in ("train", "val", "test"):
            try:
                dataset = NYUv2(root, split)
            except DatasetError as error:
                report.problems.append(f"split {split}: {error}")
                continue
            report.splits[split] = SplitStats(count=len(dataset))
            _scan(dataset, report.splits[split], report.problems, limit, split)
        return report
    if (root / SPLIT_FILE).is_file():
        splits = {s: None for s in ("train", "val", "test")}
    else:
        splits = {"all": sorted(p.name for p in root.iterdir() if (p / "rgb").is_dir())}
    for split, buildings in splits.items():
        try:
            dataset = Taskonomy(root, split if buildings is None else "train", buildings=buildings, missing="skip")
        except DatasetError as error:
            report.problems.append(f"split {split}: {error}")
            continue
        report.problems += [f"{path}: missing file" for path in dataset.missing_files]
        report.splits[split] = SplitStats(count=len(dataset))
        _scan(dataset, report.splits[split], report.problems, limit, split)
    return report
