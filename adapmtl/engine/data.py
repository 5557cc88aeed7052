"""Datasets, task specs and batches for a run, built from its config.

Batches are a pure function of the step: step s (1-based) of a run reads positions
[(s−1)·B, s·B) of the concatenated per-epoch permutations, each drawn from
(seed, epoch). Resuming at any step, or any number of workers or ranks, reads
exactly the same samples with exactly the same augmentation draws.

Two seeds: the run's `seed` orders the batches and draws the augmentation; `data.seed`
(default: the run's) draws the data itself, e.g. the synthetic scenes, so runs of
several seeds can train and test on one data set.

The loaders here re-raise an AdapMTLError (e.g. a DatasetError naming a bad file) that a
sample read raises inside a DataLoader worker as itself, one line, in the main process,
where PyTorch would re-wrap it as "Caught DatasetError in DataLoader worker process 0 /
Original Traceback ..." over some twenty lines.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from adapmtl.data import MultitaskDataset, dataset_class
from adapmtl.data.transforms import EvalTransform, TrainTransform, black_after
from adapmtl.engine.config import Config, ConfigError
from adapmtl.errors import AdapMTLError
from adapmtl.tasks import METRIC_SETS, SegmentationTask, Task, get_task


def build_dataset(config: Config, split: str) -> MultitaskDataset:
    """The `split` ("train", "val", "test") of the configured dataset, with its transform.

    The dataset named by `data.dataset` builds itself from the `data:` section (its
    `from_config`) with the run's seed, which seeds the transform's draws; the data itself
    follows `data.seed` when set. Raises DatasetError for an unknown dataset name, a missing
    `data.root` or unreadable data.
    """
    data = config.data
    if split == "train":
        paper = config.convention == "paper"  # the original pads the raw image black; its NYU-v2 loader (not its
        nyu_like = dataset_class(data.dataset).metric_set == "nyuv2"  # Taskonomy one) flips normals as an image
        transform = TrainTransform(data.crop, data.scale, data.flip, data.resize_to,
                                   image_pad=black_after(data.normalize) if paper else None,
                                   negate_normal_x=not (paper and nyu_like)) if data.crop else None
    else:
        transform = EvalTransform(data.eval_size) if data.eval_size else None
    return dataset_class(data.dataset).from_config(data, split, transform, config.seed)


def build_tasks(config: Config, dataset: MultitaskDataset) -> dict[str, Task]:
    """{task: Task} for the dataset's tasks, with the configured metric set.

    The metric set defaults to the dataset's own (`dataset.metric_set`: "taskonomy" for
    Taskonomy, "nyuv2" otherwise); a task the set lacks (keypoints2d, edge_texture under
    "nyuv2") takes Taskonomy's metrics. Raises TaskError if a task cannot be built with them
    (e.g. a dataset with fewer than 2 segmentation classes).
    """
    metric_set = config.data.metrics or dataset.metric_set
    tasks = {}
    for name in dataset.tasks:
        metrics = METRIC_SETS[metric_set].get(name) or METRIC_SETS["taskonomy"][name]
        classes = dataset.num_classes if name == SegmentationTask.name else None
        tasks[name] = get_task(name, list(metrics), num_classes=classes, convention=config.convention,
                               dataset=dataset.metric_set,
                               miou_over=config.data.miou_over if name == SegmentationTask.name else None)
    return tasks


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """The local batches of steps start+1 … total, as (epoch, index) pairs.

    Each global batch of `batch_size` is split evenly over `world_size` ranks; a rank
    reads its contiguous slice (so rank r of DDP reads what micro-batch r of a
    single process accumulating `world_size` micro-batches reads).
    """

    def __init__(self, length: int, batch_size: int, seed: int, start: int, total: int, rank: int = 0, world_size: int = 1):
        """Raises ConfigError if `batch_size` is not a multiple of `world_size` or exceeds `length`."""
        if batch_size % world_size:
            raise ConfigError(f"data.batch_size ({batch_size}) must be a multiple of the number of processes ({world_size})")
        if length < batch_size:
            raise ConfigError(f"the training set has {length} samples, fewer than one batch ({batch_size})")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.start, self.total, self.rank, self.world_size = start, total, rank, world_size
        self.batches_per_epoch = length // batch_size  # the last partial batch of an epoch is dropped

    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        local = self.batch_size // self.world_size
        epoch, permutation = -1, None
        for step in range(self.start + 1, self.total + 1):
            batch_epoch, position = divmod(step - 1, self.batches_per_epoch)
            if batch_epoch != epoch:
                epoch, permutation = batch_epoch, self._permutation(batch_epoch)
            first = position * self.batch_size + self.rank * local
            yield [(epoch, int(i)) for i in permutation[first : first + local]]

    def __len__(self) -> int:
        return self.total - self.start


class WorkerFault:
    """An AdapMTLError raised while reading a sample, carried as a batch to the main process."""

    def __init__(self, error: AdapMTLError) -> None:
        self.error = error


class FaultCarrier(Dataset):
    """`dataset`, with an AdapMTLError raised by a sample read returned as a `WorkerFault`.

    From a worker, the fault travels pickled with its error; every AdapMTLError takes its
    message as its one argument, so it arrives as the same class with the same message.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except AdapMTLError as error:
            return WorkerFault(error)


def collate_or_fault(items: list):
    """`default_collate` of the samples, or the first `WorkerFault` among them."""
    fault = next((item for item in items if isinstance(item, WorkerFault)), None)
    return default_collate(items) if fault is None else fault


class FaultRaisingLoader(DataLoader):
    """A DataLoader over `FaultCarrier(dataset)` that raises a carried error where the batch would be.

    Raises: the AdapMTLError (e.g. `DatasetError`) that reading a sample of the batch raised.
    """

    def __init__(self, dataset: Dataset, **options) -> None:
        super().__init__(FaultCarrier(dataset), collate_fn=collate_or_fault, **options)

    def __iter__(self):
        for batch in super().__iter__():
            if isinstance(batch, WorkerFault):
                raise batch.error
            yield batch


def train_loader(config: Config, dataset: Dataset, start: int, rank: int = 0, world_size: int = 1) -> DataLoader:
    """Batches for steps start+1 … train.steps of this rank.

    Raises ConfigError for a batch size the ranks cannot share or the training set cannot fill;
    iterating raises the AdapMTLError of a sample that cannot be read (see the module docstring).
    """
    sampler = StepBatchSampler(len(dataset), config.data.batch_size, config.seed, start, config.train.steps, rank, world_size)
    return FaultRaisingLoader(
        dataset, batch_sampler=sampler, num_workers=config.data.workers,
        generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG untouched
        persistent_workers=False, pin_memory=torch.cuda.is_available(),
    )


def eval_loader(config: Config, dataset: Dataset, rank: int = 0, world_size: int = 1) -> DataLoader:
    """The whole evaluation split in order; under DDP each rank reads a strided share.

    Raises, when iterated, the AdapMTLError of a sample that cannot be read (see the module docstring).
    """
    indices = list(range(rank, len(dataset), world_size))
    return FaultRaisingLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=config.data.eval_batch_size, shuffle=False,
        num_workers=config.data.workers, generator=torch.Generator().manual_seed(config.seed),
    )
