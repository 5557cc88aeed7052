"""Gradient-based importance of prunable weights, for SNIP and DiSparse."""
from __future__ import annotations

import copy

import torch
from torch import nn

from adapmtl.methods.base import MethodError, MethodContext
from adapmtl.methods.masks import MaskSet


def scoring_copy(model: nn.Module, maskset: MaskSet, reinit: bool = False) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A deep copy of `model` to score on, and the copy's tensors that `maskset` masks (by its names).

    Scoring on a copy leaves the live model untouched: its BatchNorm running statistics do not
    move (a train-mode forward would update them) and its weights are not changed. `reinit=True`
    re-initialises each of those tensors (the official code: the weight of every Conv2d and
    Linear, all of which it prunes) in the copy with `nn.init.xavier_normal_` (gain 1), in
    the MaskSet's order, from the default random generator of their device (the run's seed, the
    same on every data-parallel rank); biases, normalisation layers and buffers stay copies of the
    live model's. This is DiSparse's static scoring model (Sun et al., CVPR 2022; official code
    prune_utils.py, `disparse_prune_static`: `deepcopy(net)`, then `xavier_normal_` on the weight
    of every Conv2d and Linear, lines 29-38). The live model's gradient hooks are not copied.
    """
    twin = copy.deepcopy(model)
    counterpart = {id(m): c for m, c in zip(model.modules(), twin.modules())}
    weights = {name: getattr(counterpart[id(module)], attribute)
               for name, (module, attribute) in maskset.tensors.items()}
    if reinit:
        with torch.no_grad():
            for w in weights.values():
                nn.init.xavier_normal_(w)
    return twin, weights


def loss_gradients(
    model: nn.Module, maskset: MaskSet, context: MethodContext, start: int, batches: int, per_task: bool,
    *, weights: dict[str, torch.Tensor] | None = None, absolute: bool = False,
) -> dict[str, dict[str, torch.Tensor]]:
    """Gradients of the training loss w.r.t. every tensor `maskset` masks (Conv/Linear weights
    and nn.MultiheadAttention input projections, keyed by their MaskSet names; each result has its
    tensor's shape), over the batches of steps start+1 … start+`batches`, averaged over data-parallel
    ranks, with `model` in train mode (its mode is restored afterwards).

    `per_task=False`: one entry "all" for the summed task losses; `per_task=True`: one
    entry per task for that task's loss alone (one backward per task and batch).
    `absolute=False`: Σ_b g_b (the signed sum); `absolute=True`: Σ_b |g_b|, the absolute value
    of each batch's gradient (averaged over ranks first), summed over batches, as DiSparse
    accumulates its scores (official prune_utils.py lines 78-85).
    `weights`: the tensors to differentiate, keyed by the MaskSet's names, when `model` is not the
    MaskSet's own model (e.g. a `scoring_copy`); default `maskset.weights()`.
    Pruned weights get their true gradients here. Gradients are left cleared.
    """
    weights = maskset.weights() if weights is None else weights
    sums: dict[str, dict[str, torch.Tensor]] = {}
    was_training = model.training
    model.train()
    with maskset.raw_gradients():
        for batch in context.batches(start, batches):
            losses = context.task_losses(model, batch)
            groups = {t: [t] for t in losses} if per_task else {"all": list(losses)}
            for i, (key, tasks) in enumerate(groups.items()):
                total = sum(losses[t] for t in tasks)
                grads = torch.autograd.grad(total, list(weights.values()), retain_graph=i < len(groups) - 1,
                                            allow_unused=True)
                entry = sums.setdefault(key, {n: torch.zeros_like(w) for n, w in weights.items()})
                for n, g in zip(weights, grads):
                    if g is not None:
                        entry[n] += context.reduce(g.detach()).abs() if absolute else g.detach()
    model.train(was_training)
    if absolute:  # already averaged over ranks batch by batch
        return sums
    return {key: {n: context.reduce(g) for n, g in entry.items()} for key, entry in sums.items()}


def task_rank_keys(scores: dict[str, dict[str, torch.Tensor]], component_of: dict[str, str],
                   among: dict[str, torch.Tensor] | None = None,
                   tiebreak: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """DiSparse's rule as one key per weight: lower = more important to some task.

    For task t, the weights of the backbone and of head t (restricted to `among`) are
    ranked by t's score; a weight's rank fraction is its position / their number. A
    head weight's key is its own task's rank fraction; a backbone weight's key is the
    smallest over tasks. Keeping the weights with the lowest keys is then exactly
    "each task keeps its top q of backbone + own head; a backbone weight survives if
    any task keeps it" for the q that gives the requested count.

    Ties in a task's score go to the higher `tiebreak` (one tensor per name, e.g. |w|), then to
    the earlier position. Keys are float64 tensors of the scores' shapes (inf outside `among`).
    Raises MethodError when a component is neither "backbone" nor one of the tasks of `scores`
    (its weights would belong to no task's ranking and be pruned first, silently).
    """
    strangers = sorted(set(component_of.values()) - {"backbone", *scores})
    if strangers:
        raise MethodError(f"DiSparse ranks each head by its own task, but component(s) {strangers} are neither "
                          f"'backbone' nor a task ({', '.join(scores)}): name each head's component after its task "
                          "(model.components in a run config)")
    layers = list(component_of)
    keys = {n: torch.full_like(scores[next(iter(scores))][n], float("inf"), dtype=torch.float64) for n in layers}
    for task, per_layer in scores.items():
        names = [n for n in layers if component_of[n] in ("backbone", task)]
        flat = torch.cat([per_layer[n].reshape(-1).double() for n in names])
        allowed = torch.ones_like(flat, dtype=torch.bool) if among is None else \
            torch.cat([among[n].reshape(-1) for n in names]).to(flat.device)
        candidates = allowed.nonzero().flatten()
        if tiebreak is None:
            order = torch.sort(flat[candidates], descending=True, stable=True).indices
        else:
            second = torch.cat([tiebreak[n].detach().reshape(-1).double() for n in names]).to(flat.device)[candidates]
            first = torch.sort(second, descending=True, stable=True).indices
            order = first[torch.sort(flat[candidates][first], descending=True, stable=True).indices]
        fraction = torch.full_like(flat, float("inf"))
        fraction[candidates[order]] = torch.arange(order.numel(), dtype=torch.float64, device=flat.device) / max(1, order.numel())
        offset = 0
        for n in names:
            size = keys[n].numel()
            keys[n] = torch.minimum(keys[n], fraction[offset: offset + size].view_as(keys[n]))
            offset += size
    return keys
