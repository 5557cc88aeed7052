"""NYU-v2 in its two published formats.

``"adashare"`` (AdaShare / DiSparse / AdapMTL): ``<root>/nyu_v2_3task.json`` with keys ``train``,
``test`` (sometimes ``val``), each a list of ``[img, seg, normal, depth]`` paths relative to root:

- img: RGB PNG, 8-bit;
- seg: 8-bit one-channel PNG, classes 0-39, 255 = ignore (40 classes);
- normal: 8-bit RGB PNG, channel c = (n_c + 1) / 2 * 255 for (x, y, z); a pixel with all three
  channels 255 is invalid (a unit vector cannot encode to that);
- depth: float ``.npy`` [H, W] (or [H, W, 1]), metres (at most ``MAX_DEPTH``, 1000), 0 = invalid.

``"mtan"`` (MTAN / LibMTL): ``<root>/{train,val}/{image,label,depth,normal}/<i>.npy``, 288x384:
image float [H, W, 3] in [0, 1]; label float [H, W], classes 0-12, -1 = ignore (mapped to 255);
depth [H, W, 1] metres, 0 = invalid; normal [H, W, 3] in [-1, 1], zero vector = invalid.
That format's ``val`` folder is the official 654-image test set, so it is our ``"test"`` split.

Validation split: when the format has none (MTAN always; AdaShare JSON without ``val``), ``"val"``
is carved from the train list: a permutation by ``numpy.random.default_rng(split_seed)`` of the
train indices; its first ``max(1, round(val_fraction * n))`` entries are ``"val"``, the rest
``"train"``. So model selection never looks at the test split. ``"trainval"`` is the whole train list.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from adapmtl.data.base import (
    DatasetError,
    MultitaskDataset,
    Transform,
    check_depth,
    check_labels,
    check_same_size,
    check_tasks,
    config_root,
    dataset_root,
    read_npy,
    read_png,
    to_sample,
    unit_normals,
)
from adapmtl.data.registry import register_dataset
from adapmtl.tasks import DATASET_TASKS, IGNORE_INDEX, NYUV2_MTAN_CLASSES, SEGMENTATION_CLASSES

ADASHARE_JSON = "nyu_v2_3task.json"
SPLITS = ("train", "val", "test", "trainval")
_NUM_CLASSES = {"adashare": SEGMENTATION_CLASSES["nyuv2"], "mtan": NYUV2_MTAN_CLASSES}


def detect_nyuv2_format(root: Path) -> str:
    """``"adashare"`` if ``root`` holds ``nyu_v2_3task.json``, ``"mtan"`` if it holds ``train/image/``.

    Raises :class:`DatasetError` naming ``root`` if it holds neither.
    """
    if (root / ADASHARE_JSON).is_file():
        return "adashare"
    if (root / "train" / "image").is_dir():
        return "mtan"
    raise DatasetError(
        f"{root}: not an NYU-v2 folder; expected {ADASHARE_JSON} (AdaShare format) or train/image/*.npy (MTAN format)"
    )


def carve_val(n: int, val_fraction: float, split_seed: int, where: str) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into (train, val) index lists as documented in this module.

    Raises :class:`DatasetError` if ``val_fraction`` is not in (0, 1), or naming ``where`` (the
    train list's file and key, or folder) if ``n`` < 2.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if n < 2:
        raise DatasetError(f"{where}: cannot carve a val split from a train list of {n} sample(s); expected at least 2")
    order = np.random.default_rng(split_seed).permutation(n)
    n_val = min(max(1, round(val_fraction * n)), n - 1)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def _adashare_entries(root: Path, split: str, val_fraction: float, split_seed: int) -> list[tuple[Path, ...]]:
    path = root / ADASHARE_JSON
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: unreadable JSON ({error})") from None
    if not isinstance(info, dict) or "train" not in info or "test" not in info:
        raise DatasetError(f"{path}: expected an object with keys 'train' and 'test' (and optionally 'val')")
    for key, entries in info.items():
        if not isinstance(entries, list) or not all(
            isinstance(e, list) and len(e) == 4 and all(isinstance(p, str) for p in e) for e in entries
        ):
            raise DatasetError(f"{path}: key {key!r} must be a list of [img, seg, normal, depth] path lists")
    if split == "test":
        keys, chosen = "'test'", info["test"]
    elif split == "trainval":
        keys, chosen = "'train' or 'val'", info["train"] + info.get("val", [])
    elif "val" in info:
        keys, chosen = repr(split), info[split]
    else:
        train, val = carve_val(len(info["train"]), val_fraction, split_seed, f"{path} key 'train'")
        keys, chosen = "'train'", [info["train"][i] for i in (train if split == "train" else val)]
    if not chosen:
        raise DatasetError(f"{path}: split {split!r} has no samples (nothing listed under {keys}); expected a list of [img, seg, normal, depth]")
    return [tuple(root / p for p in entry) for entry in chosen]


def _mtan_entries(root: Path, split: str, val_fraction: float, split_seed: int) -> list[tuple[Path, ...]]:
    folder = root / ("val" if split == "test" else "train")
    image_dir = folder / "image"
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: missing folder (MTAN format)")
    names = sorted((p.stem for p in image_dir.glob("*.npy")), key=lambda s: (len(s), s))
    entries = [
        (folder / "image" / f"{n}.npy", folder / "label" / f"{n}.npy", folder / "normal" / f"{n}.npy",
         folder / "depth" / f"{n}.npy")
        for n in names
    ]
    if not entries:
        raise DatasetError(f"{image_dir}: split {split!r} has no samples; expected <i>.npy files (MTAN format)")
    if split in ("train", "val"):
        train, val = carve_val(len(entries), val_fraction, split_seed, str(image_dir))
        entries = [entries[i] for i in (train if split == "train" else val)]
    return entries


@register_dataset("nyuv2")
class NYUv2(MultitaskDataset):
    """NYU-v2 (see module docstring for both formats, the val rule and the decodings).

    Args:
        root: the dataset folder.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"trainval"``.
        tasks: subset of ``("segment_semantic", "normal", "depth_zbuffer")``; default all three.
        format: ``"auto"`` (detect from the folder), ``"adashare"`` or ``"mtan"``.
        transform: e.g. ``TrainTransform(321)``; ``None`` = full resolution.
        normalize: ``"imagenet"`` (default), ``"bgr_mean"`` (the paper's) or ``"unit"``.
        val_fraction, split_seed: the carved val split (only when the format has none).
        seed: seeds the transform's random draws.

    Attributes: ``num_classes`` (40 AdaShare, 13 MTAN), ``task_channels``, ``format``, ``files``
    (per sample, its (img, seg, normal, depth) paths).

    Raises DatasetError if the folder is missing or not NYU-v2, an argument is unknown, the split
    list is unreadable or empty, or no val split can be carved. ``load`` raises DatasetError
    naming a missing or damaged file.
    """

    metric_set = "nyuv2"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        format: str = "auto",
        transform: Transform | None = None,
        normalize: str = "imagenet",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(transform, seed, normalize)
        self.root = dataset_root(root)
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        self.format = detect_nyuv2_format(self.root) if format == "auto" else format
        if self.format not in _NUM_CLASSES:
            raise DatasetError(f"unknown NYU-v2 format {format!r}; expected 'auto', 'adashare' or 'mtan'")
        self.split = split
        self.tasks = check_tasks(tasks, DATASET_TASKS["nyuv2"], "NYUv2")
        self.num_classes = _NUM_CLASSES[self.format]
        read = _adashare_entries if self.format == "adashare" else _mtan_entries
        self.files = read(self.root, split, val_fraction, split_seed)

    @classmethod
    def from_config(cls, data: Any, split: str, transform: Transform | None, seed: int) -> "NYUv2":
        """``data.root`` in ``data.format`` with ``data.tasks``; the val split is carved with ``data.seed``
        (the run's ``seed`` when that is None), the transform's draws use ``seed``.

        Raises DatasetError if ``data.root`` is not set or the folder is not a readable NYU-v2.
        """
        return cls(config_root(data), split, tasks=data.tasks, format=data.format, transform=transform,
                   normalize=data.normalize, split_seed=seed if data.seed is None else data.seed, seed=seed)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> dict[str, torch.Tensor]:
        """Sample ``index`` decoded at full resolution. Raises DatasetError naming a file that is
        missing, unreadable, of the wrong shape or type, out of range, or of another size."""
        paths = dict(zip(("image", "segment_semantic", "normal", "depth_zbuffer"), self.files[index]))
        decode = _decode_adashare if self.format == "adashare" else _decode_mtan
        arrays = {"image": decode("image", paths["image"])}
        for task in self.tasks:
            arrays[task] = decode(task, paths[task])
        check_same_size(arrays, paths)
        rgb = arrays.pop("image")
        return to_sample(rgb, arrays, self.normalize)


def _decode_adashare(key: str, path: Path) -> np.ndarray:
    if key == "image":
        return read_png(path, 3, "uint8")
    if key == "segment_semantic":
        return check_labels(read_png(path, 1, "uint8"), _NUM_CLASSES["adashare"], path)
    if key == "normal":
        raw = read_png(path, 3, "uint8")
        invalid = (raw == 255).all(axis=2)
        return unit_normals(raw.astype(np.float32) / 127.5 - 1.0, ~invalid)
    return check_depth(read_npy(path, ("HW", "HW1")), path)


def _decode_mtan(key: str, path: Path) -> np.ndarray:
    if key == "image":
        image = read_npy(path, ("HW3",))
        if image.min() < 0 or image.max() > 1.0 + 1e-4:
            raise DatasetError(f"{path}: image values {image.min():.3f}..{image.max():.3f}; expected 0..1")
        return image * 255.0
    if key == "segment_semantic":
        labels = read_npy(path, ("HW", "HW1"))
        if not np.array_equal(labels, np.round(labels)):
            raise DatasetError(f"{path}: non-integer labels; expected classes 0..{_NUM_CLASSES['mtan'] - 1} or -1 (ignore)")
        labels = np.where(labels == -1, IGNORE_INDEX, labels)
        return check_labels(labels, _NUM_CLASSES["mtan"], path)
    if key == "normal":
        normal = read_npy(path, ("HW3",))
        if np.abs(normal).max() > 1.0 + 1e-3:
            raise DatasetError(f"{path}: normal components up to {np.abs(normal).max():.3f}; expected [-1, 1]")
        return unit_normals(normal, np.ones(normal.shape[:2], dtype=bool))
    return check_depth(read_npy(path, ("HW", "HW1")), path)
