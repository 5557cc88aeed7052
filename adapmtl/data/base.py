"""What every dataset here shares: the sample format, image normalisation, checked file reading.

A sample is a dict of tensors (only the requested tasks' keys are present):

- ``"image"``: float32 [3, H, W], normalised (see :data:`NORMALIZATIONS`).
- ``"segment_semantic"``: int64 [H, W], class ids ``0..num_classes-1``, ``adapmtl.tasks.IGNORE_INDEX`` (255) = ignore.
- ``"normal"``: float32 [3, H, W], unit vectors in the camera frame; exactly (0, 0, 0) where invalid.
- ``"depth_zbuffer"``: float32 [1, H, W], metres in [0, :data:`MAX_DEPTH`]; 0 = invalid.
- ``"keypoints2d"``, ``"edge_texture"``: float32 [1, H, W] in [0, 1].

The task facts (names, head channels, ignore label) live in :mod:`adapmtl.tasks`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from adapmtl.errors import AdapMTLError
from adapmtl.tasks import IGNORE_INDEX, task_channels

MAX_DEPTH = 1000.0
"""Largest depth a dataset file may hold, in metres. NYU-v2 stays under 10 m and Taskonomy's
encoding under 128 m; a larger value comes from a wrong unit or a corrupt file, and values
near float32's limit (3e38) make the depth loss infinite."""

NORMALIZATIONS = ("imagenet", "bgr_mean", "unit")
"""Image normalisations.

- ``"imagenet"`` (default): RGB, scaled to [0, 1], minus ImageNet mean (0.485, 0.456, 0.406),
  divided by std (0.229, 0.224, 0.225).
- ``"bgr_mean"``: the paper's convention (AdaShare/DiSparse/AdapMTL code): channels in BGR order,
  minus (104.008, 116.669, 122.679), no scaling (values about -123..151).
- ``"unit"``: RGB scaled to [0, 1], nothing else.
"""

_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_BGR_MEAN = np.array([104.00698793, 116.66876762, 122.67891434], dtype=np.float32)


class DatasetError(AdapMTLError, ValueError):
    """A dataset folder or file is missing, unreadable, or holds values of the wrong shape, type or range."""


def dataset_root(root: str | Path) -> Path:
    """``root`` as a Path. Raises :class:`DatasetError` if it is not an existing folder."""
    path = Path(root)
    if not path.is_dir():
        raise DatasetError(f"{path}: dataset folder does not exist")
    return path


def check_tasks(tasks: Sequence[str] | None, available: Sequence[str], where: str) -> tuple[str, ...]:
    """Return ``tasks`` (default: all ``available``) after checking every name is available.

    Raises :class:`DatasetError` naming ``where`` if the list is empty or names an unavailable task.
    """
    if tasks is None:
        return tuple(available)
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    unknown = [t for t in tasks if t not in available]
    if unknown or not tasks:
        raise DatasetError(f"{where}: unknown or empty task list {list(tasks)}; available: {list(available)}")
    return tasks


def config_root(data: Any) -> Path:
    """``data.root`` of a run config's ``data:`` section, which a dataset read from a folder needs.

    Raises :class:`DatasetError` naming the key if it is not set.
    """
    if data.root is None:
        raise DatasetError(f"`data.root` is required for data.dataset={data.dataset!r} (the dataset's folder)")
    return Path(data.root)


def normalize_image(rgb: np.ndarray, mode: str) -> torch.Tensor:
    """Turn an RGB image [H, W, 3] with values 0..255 (any dtype) into a normalised float32 [3, H, W] tensor.

    Raises :class:`DatasetError` if ``mode`` is not one of :data:`NORMALIZATIONS`.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    if mode == "imagenet":
        out = (rgb / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD
    elif mode == "bgr_mean":
        out = rgb[..., ::-1] - _BGR_MEAN
    elif mode == "unit":
        out = rgb / 255.0
    else:
        raise DatasetError(f"unknown image normalisation {mode!r}; expected one of {list(NORMALIZATIONS)}")
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


def denormalize_image(image: torch.Tensor, mode: str) -> np.ndarray:
    """Inverse of :func:`normalize_image`: float [3, H, W] -> uint8 RGB [H, W, 3] (for previews)."""
    x = image.detach().cpu().numpy().transpose(1, 2, 0).astype(np.float32)
    if mode == "imagenet":
        x = (x * _IMAGENET_STD + _IMAGENET_MEAN) * 255.0
    elif mode == "bgr_mean":
        x = (x + _BGR_MEAN)[..., ::-1]
    else:
        x = x * 255.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def read_png(path: Path, channels: int, dtype: str) -> np.ndarray:
    """Read a PNG and check it: ``channels`` 1 -> [H, W], 3 -> [H, W, 3]; ``dtype`` "uint8" or "uint16".

    Raises :class:`DatasetError` naming the file if it is missing, unreadable, or of the wrong shape or type.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: missing file")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            array = np.array(im)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DatasetError(f"{path}: unreadable image ({error})") from None
    if dtype == "uint16" and mode in ("I", "I;16", "I;16B") and array.dtype != np.uint16:
        if array.min() < 0 or array.max() > 65535:
            raise DatasetError(f"{path}: expected 16-bit values 0..65535, found {array.min()}..{array.max()}")
        array = array.astype(np.uint16)
    if channels == 3 and array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]  # RGBA: the alpha channel carries nothing here
    if channels == 1 and array.ndim == 3 and array.shape[2] in (3, 4) and (array[..., :3] == array[..., :1]).all():
        array = array[..., 0]  # grey stored as RGB: identical channels carry one value
    expected = (2,) if channels == 1 else (3,)
    if array.ndim not in expected or (channels == 3 and array.shape[2] != 3):
        raise DatasetError(f"{path}: expected a {channels}-channel image, found shape {tuple(array.shape)} (mode {mode})")
    if array.dtype != np.dtype(dtype):
        raise DatasetError(f"{path}: expected {dtype} pixels, found {array.dtype} (mode {mode})")
    return array


def read_npy(path: Path, shapes: Sequence[str]) -> np.ndarray:
    """Read a numeric ``.npy`` array whose shape matches one of ``shapes`` ("HW", "HW1", "HW3").

    Returns float32 [H, W] for "HW"/"HW1" and [H, W, 3] for "HW3". Raises :class:`DatasetError`
    naming the file if it is missing, unreadable, non-numeric, of the wrong shape, or holds NaN/inf
    or values beyond float32's range.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: missing file")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DatasetError(f"{path}: unreadable .npy ({error})") from None
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise DatasetError(f"{path}: expected a numeric array, found dtype {array.dtype}")
    ok = {
        "HW": array.ndim == 2,
        "HW1": array.ndim == 3 and array.shape[2] == 1,
        "HW3": array.ndim == 3 and array.shape[2] == 3,
    }
    if not any(ok[s] for s in shapes):
        raise DatasetError(f"{path}: expected shape {' or '.join(shapes)}, found {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise DatasetError(f"{path}: holds NaN or infinite values")
    with np.errstate(over="ignore"):  # an overflow is reported below, with the file
        converted = array.astype(np.float32)
    if not np.isfinite(converted).all():
        raise DatasetError(f"{path}: values up to {np.abs(array).max():.3g} exceed the float32 range (±3.4e38)")
    return converted[..., 0] if ok["HW1"] and "HW3" not in shapes else converted


def check_labels(labels: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """Check integer labels are in ``0..num_classes-1`` or 255; return them as int64.

    Raises :class:`DatasetError` naming ``path`` and the out-of-range values otherwise.
    """
    bad = (labels >= num_classes) & (labels != IGNORE_INDEX)
    if bad.any() or (labels < 0).any():
        values = np.unique(labels[bad | (labels < 0)])[:8].tolist()
        raise DatasetError(
            f"{path}: out-of-range labels {values}; expected 0..{num_classes - 1} or {IGNORE_INDEX} (ignore)"
        )
    return labels.astype(np.int64)


def check_depth(depth: np.ndarray, path: Path) -> np.ndarray:
    """Check depth in metres lies in [0, :data:`MAX_DEPTH`] (0 = invalid) and is finite; return it.

    Raises :class:`DatasetError` naming ``path`` and the offending extreme otherwise.
    """
    if not np.isfinite(depth).all():
        raise DatasetError(f"{path}: holds NaN or infinite depth values; expected metres 0..{MAX_DEPTH:g}, 0 = invalid")
    if (depth < 0).any():
        raise DatasetError(f"{path}: negative depth values (min {depth.min():.3f}); expected metres >= 0, 0 = invalid")
    if (depth > MAX_DEPTH).any():
        raise DatasetError(
            f"{path}: depth values up to {depth.max():.3g} m; expected at most {MAX_DEPTH:g} m "
            "(metres, 0 = invalid: is the file in millimetres or corrupt?)"
        )
    return depth


def unit_normals(normals: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Renormalise [H, W, 3] normals to unit length where ``valid``; set exactly 0 elsewhere."""
    norm = np.linalg.norm(normals, axis=2, keepdims=True)
    valid = valid & (norm[..., 0] > 0.5)
    out = np.where(valid[..., None], normals / np.maximum(norm, 1e-6), 0.0)
    return out.astype(np.float32)


def check_same_size(arrays: Mapping[str, np.ndarray], paths: Mapping[str, Path]) -> None:
    """Raises :class:`DatasetError` naming the files and sizes if the image and targets of one
    sample differ in height/width."""
    sizes = {name: a.shape[:2] for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{paths[n]} {sizes[n][0]}x{sizes[n][1]}" for n in sizes)
        raise DatasetError(f"image and targets of one sample differ in size: {listing}")


def to_sample(
    rgb: np.ndarray, targets: Mapping[str, np.ndarray], normalize: str
) -> dict[str, torch.Tensor]:
    """Build a sample dict of tensors from numpy arrays in [H, W(, C)] layout (see module docstring).

    Raises :class:`DatasetError` if ``normalize`` is not one of :data:`NORMALIZATIONS`.
    """
    sample = {"image": normalize_image(rgb, normalize)}
    for task, value in targets.items():
        if task == "segment_semantic":
            sample[task] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.int64))
        elif task == "normal":
            sample[task] = torch.from_numpy(np.ascontiguousarray(value.transpose(2, 0, 1), dtype=np.float32))
        else:
            sample[task] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))[None]
    return sample


Transform = Callable[[dict, np.random.Generator], dict]


class MultitaskDataset(torch.utils.data.Dataset):
    """Base of the datasets here: decoding per format, then an optional transform with its own seeded draw.

    Subclasses set ``tasks``, ``num_classes`` and implement ``__len__`` and ``load(index)`` (the decoded,
    untransformed sample). The transform's random draw for item ``i`` comes from
    ``numpy.random.default_rng([seed, epoch, i])``: reproducible, independent of DataLoader workers;
    call :meth:`set_epoch` each epoch for fresh draws.

    A dataset that a run config can name also sets ``metric_set`` (the ``adapmtl.tasks.METRIC_SETS``
    key its tasks are scored with by default), implements :meth:`from_config`, and is registered
    with ``@register_dataset(name)`` (see :mod:`adapmtl.data.registry`).
    """

    tasks: tuple[str, ...]
    num_classes: int
    metric_set: ClassVar[str] = "nyuv2"

    @classmethod
    def from_config(cls, data: Any, split: str, transform: Transform | None, seed: int) -> "MultitaskDataset":
        """The ``split`` (``"train"``, ``"val"``, ``"test"``) of this dataset as a run config's ``data:``
        section (``adapmtl.engine.config.DataConfig``) describes it, with ``transform`` and ``seed``.

        Raises :class:`DatasetError` if the section lacks what the dataset needs or its files are bad.
        """
        raise NotImplementedError(f"{cls.__name__} cannot be built from a run config")

    def __init__(self, transform: Transform | None, seed: int, normalize: str) -> None:
        """Raises :class:`DatasetError` if ``normalize`` is not one of :data:`NORMALIZATIONS`."""
        if normalize not in NORMALIZATIONS:
            raise DatasetError(f"unknown image normalisation {normalize!r}; expected one of {list(NORMALIZATIONS)}")
        self.transform = transform
        self.seed = int(seed)
        self.normalize = normalize
        self.epoch = 0

    @property
    def task_channels(self) -> dict[str, int]:
        """Task name -> output channels of its head, e.g. ``{"segment_semantic": 40, "normal": 3, ...}``.

        Raises :class:`adapmtl.tasks.TaskError` if ``tasks`` holds an unknown task name.
        """
        return task_channels(self.tasks, self.num_classes)

    def set_epoch(self, epoch: int) -> None:
        """Use the random draws of ``epoch`` for the transform from now on."""
        self.epoch = int(epoch)

    def load(self, index: int) -> dict[str, torch.Tensor]:
        """The decoded sample ``index`` at full resolution, before any transform.

        Raises NotImplementedError here; datasets read from files raise :class:`DatasetError`
        naming a missing or damaged file.
        """
        raise NotImplementedError

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """Sample ``index``; an ``(epoch, index)`` pair fixes the epoch of the random draw
        explicitly (what the training engine passes, so resuming and workers change nothing).
        Raises IndexError outside ``0..len-1``, and what :meth:`load` raises."""
        epoch = self.epoch
        if isinstance(index, tuple):
            epoch, index = index
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        sample = self.load(index)
        if self.transform is not None:
            sample = self.transform(sample, np.random.default_rng([self.seed, epoch, index]))
        return sample
