"""Evaluate a multitask model over a whole split: streamed metrics and mean task losses."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import torch.distributed as dist

from adapmtl.engine.distributed import Distributed, all_reduce_sum
from adapmtl.models.outputs import task_outputs
from adapmtl.tasks import Task


def move(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors on `device` (copied asynchronously where possible)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    tasks: Mapping[str, Task],
    env: Distributed,
    *,
    autocast=nullcontext,
    progress: bool = False,
    description: str = "eval",
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """({task: {metric: value}}, {task: mean loss}) over everything `loader` yields.

    Under data parallelism each rank reads a share; the metric states (sums) and
    loss sums are all-reduced, so every rank returns the whole split's figures.
    Raises TaskError if an output or target has the wrong shape or a task saw no valid pixel,
    DistributedError if a rank is lost, and the AdapMTLError of a sample `loader` cannot read.
    """
    was_training = model.training
    model.eval()
    meters = {name: task.accumulator() for name, task in tasks.items()}
    loss_sums = torch.zeros(len(tasks) + 1, dtype=torch.float64, device=env.device)
    for batch in tqdm(loader, desc=description, leave=False, disable=not (progress and env.is_main)):
        batch = move(batch, env.device)
        with autocast():
            outputs = task_outputs(model(batch["image"]), list(tasks))
        size = batch["image"].shape[0]
        for i, (name, task) in enumerate(tasks.items()):
            output = outputs[name].float()
            meters[name].update(output, batch[name])
            loss_sums[i] += task.loss(output, batch[name]).double() * size
        loss_sums[-1] += size
    for meter in meters.values():
        _merge_state(meter, env)
    all_reduce_sum(loss_sums, env)
    model.train(was_training)
    losses = {name: float(loss_sums[i] / loss_sums[-1]) for i, name in enumerate(tasks)}
    return {name: meter.compute() for name, meter in meters.items()}, losses


def _merge_state(meter, env: Distributed) -> None:
    """Sum every rank's metric state (all sums) by key into every rank.

    Gathered as objects, not all-reduced tensor by tensor: an accumulator creates its
    state on its first valid pixel, so a rank whose share had none lacks keys, and
    mismatched collectives would hang.
    """
    if not env.enabled:
        return
    gathered: list = [None] * env.world_size
    dist.all_gather_object(gathered, {k: v.cpu() for k, v in meter.state.items()})
    merged: dict[str, torch.Tensor] = {}
    for state in gathered:
        for key, value in state.items():
            merged[key] = merged[key] + value if key in merged else value.clone()
    meter.state = {k: v.to(env.device) for k, v in merged.items()}
