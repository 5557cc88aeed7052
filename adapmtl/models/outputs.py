"""One shape for every model's outputs: {task: tensor}, whatever the model's forward returns.

A registered model returns {task: [B, C, H, W]}. A user's model (`adapmtl.models.factory`) may
return that dict (extra keys, such as auxiliary outputs, are ignored), a tuple or list with one
tensor per task in the dataset's task order, or a single tensor when there is one task.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from adapmtl.models.errors import ModelError


def task_outputs(outputs: Any, tasks: Sequence[str]) -> Mapping[str, torch.Tensor]:
    """`outputs` (a model's forward result) as {task: tensor} for `tasks`, in that order.

    Raises ModelError naming what the model returned and what was expected: a dict that lacks a
    task, a tuple or list of another length than `tasks`, a lone tensor for several tasks, a
    task's output that is not one tensor, or anything else."""
    mapped = _by_task(outputs, tasks)
    for task in tasks:
        if not isinstance(mapped[task], torch.Tensor):
            raise ModelError(f"the model's output for task {task!r} is a {type(mapped[task]).__name__}, expected one "
                             "tensor [B, C, H, W]; return auxiliary outputs under keys of their own")
    return mapped


def _by_task(outputs: Any, tasks: Sequence[str]) -> Mapping[str, Any]:
    if isinstance(outputs, Mapping):
        missing = [t for t in tasks if t not in outputs]
        if missing:
            raise ModelError(f"the model's output dict has keys {list(outputs)}, but no output for task(s) "
                             f"{missing}; return {{task: tensor}} with one entry per task {list(tasks)}")
        return outputs
    if isinstance(outputs, (tuple, list)):
        if len(outputs) != len(tasks):
            raise ModelError(f"the model returned {len(outputs)} outputs for {len(tasks)} tasks {list(tasks)}; "
                             "return one tensor per task, in that order, or a {task: tensor} dict")
        return dict(zip(tasks, outputs))
    if isinstance(outputs, torch.Tensor):
        if len(tasks) != 1:
            raise ModelError(f"the model returned one tensor for {len(tasks)} tasks {list(tasks)}; return a "
                             "{task: tensor} dict or one tensor per task")
        return {tasks[0]: outputs}
    raise ModelError(f"the model returned a {type(outputs).__name__}; expected a {{task: tensor}} dict, a tuple of "
                     f"tensors in task order {list(tasks)}, or a tensor (one task)")
