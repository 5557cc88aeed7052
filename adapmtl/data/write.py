"""Write synthetic scenes to disk in the published formats, so they load through the real loaders."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from adapmtl.data.base import DatasetError
from adapmtl.data.nyuv2 import ADASHARE_JSON
from adapmtl.data.synthetic import render_scene
from adapmtl.data.taskonomy import SPLIT_FILE, TASKONOMY_TASKS, domain_path, encode_taskonomy

FORMATS = ("nyuv2", "taskonomy")
BUILDING_FRACTIONS = (0.15, 0.15)  # taskonomy: the val and test shares of the buildings


def _split_counts(total: int, fractions: tuple[float, float]) -> tuple[int, int, int]:
    """(train, val, test) numbers of ``total`` buildings with val/test ``fractions``; at least one each."""
    if total < 3:
        raise DatasetError(f"need at least 3 buildings (one per split) to make train/val/test, got {total}; raise n or buildings")
    n_val, n_test = (max(1, round(f * total)) for f in fractions)
    return total - n_val - n_test, n_val, n_test


def write_synthetic(
    out: str | Path,
    format: str = "nyuv2",
    n: int = 100,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    test_fraction: float = 0.2,
    buildings: int = 10,
    progress: bool = True,
) -> Path:
    """Render scenes ``[seed, 0] .. [seed, n-1]`` and write them under ``out``.

    ``format="nyuv2"``: AdaShare layout (``img/``, ``seg/``, ``normal_mask/``, ``depth/`` and
    ``nyu_v2_3task.json`` with ``train`` and ``test``: the last ``round(test_fraction * n)``
    scenes are test; ``NYUv2`` carves ``val`` from train). Labels are the scene classes (< 40).

    ``format="taskonomy"``: official layout with scenes spread over ``min(buildings, n)``
    buildings ``synth000``, ... in contiguous blocks, and ``splits.csv`` (official CSV format)
    giving the last ~15 % of buildings to ``test``, the ~15 % before to ``val`` (at least one
    each), the rest to ``train``. Files use the published encodings (see
    :func:`~adapmtl.data.taskonomy.encode_taskonomy`); view is always 0.

    Returns ``Path(out)``. Raises DatasetError for an unknown ``format``, fewer than 2 train
    scenes (nyuv2) or fewer than 3 buildings (taskonomy); OSError if ``out`` cannot be written.
    """
    if format not in FORMATS:
        raise DatasetError(f"unknown format {format!r}; expected one of {list(FORMATS)}")
    if len(size) != 2 or min(size) < 1:
        raise DatasetError(f"size must be two positive integers (height, width), got {tuple(size)}")
    # checked before anything is written: a refused request leaves no folder behind
    n_test = max(1, round(test_fraction * n))
    if format == "nyuv2" and n - n_test < 2:
        raise DatasetError(f"n={n} leaves fewer than 2 train scenes after {n_test} test scenes")
    if format == "taskonomy":
        _split_counts(min(buildings, n), BUILDING_FRACTIONS)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    scenes = (render_scene([seed, i], size) for i in range(n))
    bar = tqdm(scenes, total=n, desc=f"writing {format}", disable=not progress, unit="scene")
    if format == "nyuv2":
        _write_nyuv2(root, bar, n, test_fraction)
    else:
        _write_taskonomy(root, bar, n, buildings)
    return root


def _write_nyuv2(root: Path, scenes, n: int, test_fraction: float) -> None:
    for folder in ("img", "seg", "normal_mask", "depth"):
        (root / folder).mkdir(exist_ok=True)
    entries = []
    for i, scene in enumerate(scenes):
        name = f"{i:04d}"
        entry = [f"img/{name}.png", f"seg/{name}.png", f"normal_mask/{name}.png", f"depth/{name}.npy"]
        Image.fromarray(scene["image"]).save(root / entry[0])
        Image.fromarray(scene["segment_semantic"]).save(root / entry[1])
        normal = np.clip(np.rint((scene["normal"] + 1.0) * 127.5), 0, 255).astype(np.uint8)  # a unit vector never encodes to (255, 255, 255), the invalid value
        Image.fromarray(normal).save(root / entry[2])
        np.save(root / entry[3], scene["depth_zbuffer"])
        entries.append(entry)
    n_test = max(1, round(test_fraction * n))
    (root / ADASHARE_JSON).write_text(json.dumps({"train": entries[: n - n_test], "test": entries[n - n_test :]}))


def _write_taskonomy(root: Path, scenes, n: int, buildings: int) -> None:
    count = min(buildings, n)
    names = [f"synth{b:03d}" for b in range(count)]
    n_train, n_val, _ = _split_counts(count, BUILDING_FRACTIONS)
    for i, scene in enumerate(scenes):
        building = names[i * count // n]
        for domain in ("rgb",) + TASKONOMY_TASKS:
            path = domain_path(root, building, str(i), "0", domain)
            path.parent.mkdir(parents=True, exist_ok=True)
            array = scene["image"] if domain == "rgb" else encode_taskonomy(domain, scene[domain])
            Image.fromarray(array).save(path)
    rows = ["id,train,val,test"]
    for b, name in enumerate(names):
        flags = (b < n_train, n_train <= b < n_train + n_val, b >= n_train + n_val)
        rows.append(",".join([name] + [str(int(f)) for f in flags]))
    (root / SPLIT_FILE).write_text("\n".join(rows) + "\n")
