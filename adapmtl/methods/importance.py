"""Gradient-based importance of prunable weights, for SNIP and DiSparse."""
from __future__ import annotations

import torch
from torch import nn

from adapmtl.methods.base import MethodContext
from adapmtl.methods.masks import MaskSet


def loss_gradients(
    model: nn.Module, maskset: MaskSet, context: MethodContext, start: int, batches: int, per_task: bool
) -> dict[str, dict[str, torch.Tensor]]:
    """Gradients of the training loss w.r.t. every tensor `maskset` masks (Conv/Linear weights
    and nn.MultiheadAttention input projections, keyed by their MaskSet names), summed over the
    batches of steps start+1 … start+`batches` and averaged over data-parallel ranks.

    `per_task=False`: one entry "all" for the summed task losses; `per_task=True`: one
    entry per task for that task's loss alone (one backward per task and batch).
    Pruned weights get their true gradients here. Gradients are left cleared.
    """
    weights = maskset.weights()
    sums: dict[str, dict[str, torch.Tensor]] = {}
    was_training = model.training
    model.train()
    with maskset.raw_gradients():
        for batch in context.batches(start, batches):
            groups = None
            losses = context.task_losses(model, batch)
            groups = {t: [t] for t in losses} if per_task else {"all": list(losses)}
            for i, (key, tasks) in enumerate(groups.items()):
                total = sum(losses[t] for t in tasks)
                grads = torch.autograd.grad(total, list(weights.values()), retain_graph=i < len(groups) - 1,
                                            allow_unused=True)
                entry = sums.setdefault(key, {n: torch.zeros_like(w) for n, w in weights.items()})
                for n, g in zip(weights, grads):
                    if g is not None:
                        entry[n] += g.detach()
    model.train(was_training)
    return {key: {n: context.reduce(g) for n, g in entry.items()} for key, entry in sums.items()}


def task_rank_keys(scores: dict[str, dict[str, torch.Tensor]], component_of: dict[str, str],
                   among: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """DiSparse's rule as one key per weight: lower = more important to some task.

    For task t, the weights of the backbone and of head t (restricted to `among`) are
    ranked by t's score; a weight's rank fraction is its position / their number. A
    head weight's key is its own task's rank fraction; a backbone weight's key is the
    smallest over tasks. Keeping the weights with the lowest keys is then exactly
    "each task keeps its top q of backbone + own head; a backbone weight survives if
    any task keeps it" for the q that gives the requested count.
    """
    layers = list(component_of)
    keys = {n: torch.full_like(scores[next(iter(scores))][n], float("inf"), dtype=torch.float64) for n in layers}
    for task, per_layer in scores.items():
        names = [n for n in layers if component_of[n] in ("backbone", task)]
        flat = torch.cat([per_layer[n].reshape(-1).double() for n in names])
        allowed = torch.ones_like(flat, dtype=torch.bool) if among is None else \
            torch.cat([among[n].reshape(-1) for n in names]).to(flat.device)
        candidates = allowed.nonzero().flatten()
        order = torch.sort(flat[candidates], descending=True, stable=True).indices
        fraction = torch.full_like(flat, float("inf"))
        fraction[candidates[order]] = torch.arange(order.numel(), dtype=torch.float64, device=flat.device) / max(1, order.numel())
        offset = 0
        for n in names:
            size = keys[n].numel()
            keys[n] = torch.minimum(keys[n], fraction[offset: offset + size].view_as(keys[n]))
            offset += size
    return keys
