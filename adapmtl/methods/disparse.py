"""DiSparse (Sun et al., "DiSparse: Disentangled Sparsification for Multitask Model Compression",
CVPR 2022), as its official code does it (github.com/SHI-Labs/DiSparse-Multitask-Model-Compression;
files and lines below refer to its commit afd3b73):

- `disparse_static` (create_pruned_net.py `--method disparse_static`, then launch_training.py
  `--method disparse_static`; prune_utils.py `disparse_prune_static`): pruned once before training.
- `disparse_pretrained` (`--method disparse_pt`; prune_utils.py `disparse_prune_pretrained_l1` for
  NYU-v2 and Cityscapes, `disparse_prune_pretrained` for Taskonomy): a trained dense model pruned
  once, then fine-tuned.
- `disparse_dynamic` (launch_training.py `--method disparse_dynamic`; train.py
  `disparse_dynamic_train`, dynamic_prune.py): sparse training from random ERK masks with
  periodic drop and regrowth.

**The rule.** DiSparse treats every task on its own. Task t scores the weights it uses, the
backbone and its own head, from t's loss alone; each task keeps its top fraction q of those
weights. A head weight follows its own task's decision; a backbone weight is pruned only when
every task agrees it is unimportant: it survives if any task keeps it (prune_utils.py lines
126-176: the backbone mask is the OR of the tasks' keep masks, a head's is its task's).

**Exact sparsity (our choice).** The authors pick q per dataset and target by hand so the union
lands near the target (create_pruned_net.py lines 30-120: e.g. q = 0.08 for 90 % on NYU-v2). We
turn the rule into one key per weight (its rank fraction within task t's ranking for a head
weight, the smallest over tasks for a backbone weight; `task_rank_keys`) and keep exactly the
weights with the lowest keys: the rule above for the q that meets the target to the weight,
found without tuning. Ties are broken by position.

Every score is computed on a copy of the model (`scoring_copy`), in train mode as the official
code scores, so the live model's BatchNorm running statistics never move while scoring. The
per-task losses are the unweighted task losses (the official `DiSparse_SceneNetLoss`).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from adapmtl.methods.base import MethodError, MethodOptions, ReachAt, Steps
from adapmtl.methods.erk import DISPARSE_POWER_SCALE, erk_counts, erk_densities
from adapmtl.methods.importance import loss_gradients, scoring_copy, task_rank_keys
from adapmtl.methods.masks import MaskedMethod, MaskSet
from adapmtl.methods.registry import register_method
from adapmtl.methods.snip import ImportanceOptions
from adapmtl.sparsity.guard import keep_count

TaskScores = dict[str, dict[str, torch.Tensor]]
"""{task: {MaskSet tensor name: score tensor of that weight's shape}}."""


class DiSparseOptions(ImportanceOptions):
    """Options of `disparse_static`."""

    importance_batches: Steps = Field(50, description="training batches that score importance (the official "
                                      "create_pruned_net.py --num_batches, default 50)")


class DiSparsePretrainedOptions(DiSparseOptions):
    """Options of `disparse_pretrained`."""

    pretrain: float = Field(20000 / 21000, gt=0, lt=1, description="fraction of train.steps trained dense before "
                            "the one pruning; the rest fine-tunes. Default: the official NYU-v2 proportion, 20,000 "
                            "dense iterations then 1,000 of fine-tuning (config_nyuv2.py MAX_ITERS, RETRAIN_EPOCH)")
    score: Literal["magnitude", "gradient"] = Field(
        "magnitude", description="per-task importance: |w| (official disparse_prune_pretrained_l1, used for NYU-v2 "
        "and Cityscapes) or Σ_b |∂L_t/∂w| · w² over importance_batches batches (disparse_prune_pretrained, "
        "Taskonomy)")


class DiSparseDynamicOptions(MethodOptions):
    """Options of `disparse_dynamic` (defaults: the official NYU-v2 settings, config_nyuv2.py lines 26-28)."""

    reach_at: ReachAt = Field(0.75, description="fraction of train.steps after which the masks stay fixed "
                              "(official END = 15,000 of 20,000 iterations; Taskonomy 75,000 of 100,000)")
    update_every: Steps = Field(50, description="steps between mask updates (official INT: 50 on NYU-v2 and "
                                "Cityscapes, 250 on Taskonomy)")
    regrow_fraction: float = Field(0.5, gt=0, lt=1, description="initial drop/regrow fraction α of each layer's "
                                   "kept weights, decayed to 0 at reach_at by a cosine (official PRUNE_RATE)")
    erk_power_scale: float = Field(DISPARSE_POWER_SCALE, gt=0, description="exponent of the ERK raw densities "
                                   "of the initial random masks (official googleAI_ERK: 0.9; RigL: 1.0)")


def _top(scores: torch.Tensor, allowed: torch.Tensor, count: int) -> torch.Tensor:
    """A boolean tensor of `scores`' shape: the `count` entries of `allowed` with the highest
    scores, ties broken by position (the earlier entry wins)."""
    flat = scores.detach().reshape(-1).double()
    candidates = allowed.reshape(-1).to(flat.device).nonzero().flatten()
    order = candidates[torch.sort(flat[candidates], descending=True, stable=True).indices[:count]]
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    chosen[order] = True
    return chosen.view_as(scores).to(allowed.device)


class _DiSparse(MaskedMethod):
    """What the DiSparse variants share: the multitask check and the consensus pruning."""

    def prepare(self, model: nn.Module) -> None:
        """Set up the masks. Raises MethodError if the model has no `backbone` component,
        ComponentError if it has no prunable layer or a head named "backbone"."""
        super().prepare(model)
        if "backbone" not in set(self.maskset.component_of.values()):
            raise MethodError(f"{self.name} needs a component named 'backbone' (DiSparse prunes the backbone by the "
                              "tasks' consensus): a model with `backbone` and `heads`, or components given with "
                              "model.components (one named 'backbone', one per task named after it)")

    def prune_by_consensus(self, scores: TaskScores) -> None:
        """Keep exactly the target's number of weights by DiSparse's per-task rule (module doc)
        applied to `scores`. Raises MethodError when the collapse guard keeps more than that."""
        keys = task_rank_keys(scores, self.maskset.component_of)
        self.maskset.keep_top({n: -k for n, k in keys.items()},
                              self.maskset.numel - self.maskset.zeros_for(self.options.target))


def static_task_scores(model: nn.Module, maskset: MaskSet, context, batches: int) -> TaskScores:
    """DiSparse's static importance: for each task t and masked weight w, Σ_b |∂L_t/∂w ⊙ w| over
    the training batches of steps 1 … `batches`, computed on a copy of `model` whose masked
    weights are re-initialised with xavier_normal_ (gradients and w are the copy's; w is fixed
    over the batches, so this is |w| · Σ_b |g_b|). Official: prune_utils.py `disparse_prune_static`
    (copy and xavier_normal_ lines 29-38; |∂L/∂mask| = |g ⊙ w| summed over batches, lines 78-85).

    `context`: the engine's MethodContext. Returns {task: {name: scores, the weight's shape}}.
    """
    scorer, weights = scoring_copy(model, maskset, reinit=True)
    grads = loss_gradients(scorer, maskset, context, 0, batches, per_task=True, weights=weights, absolute=True)
    return {t: {n: g * weights[n].detach().abs() for n, g in per.items()} for t, per in grads.items()}


@register_method
class DiSparseStatic(_DiSparse):
    """`disparse_static`: DiSparse pruned once at initialisation, mask fixed for the whole training.

    Importance: `static_task_scores` over `method.importance_batches` (default 50) batches on a
    xavier-re-initialised copy; the live model keeps its own initial weights (masked) and its
    BatchNorm statistics. Official: create_pruned_net.py `--method disparse_static --num_batches 50`
    (prune_utils.py `disparse_prune_static`), then launch_training.py `--method disparse_static`.
    """

    name = "disparse_static"
    options_type = DiSparseOptions

    def task_scores(self, model: nn.Module) -> TaskScores:
        """The per-task scores `begin` prunes by (`static_task_scores`). Raises MethodError if the
        method was not bound to the engine's context."""
        return static_task_scores(model, self.maskset, self.require_context(), self.options.importance_batches)

    def begin(self, model: nn.Module) -> None:
        """Score weights per task and fix the consensus mask at the exact target.

        Raises MethodError if the method was not bound to the engine's context."""
        self.prune_by_consensus(self.task_scores(model))


@register_method
class DiSparsePretrained(_DiSparse):
    """`disparse_pretrained`: DiSparse applied once to a trained dense model, then fine-tuned.

    Official (`--method disparse_pt`): the dense model trained for the full recipe (NYU-v2: 20,000
    iterations) is pruned once by the per-task rule, with scores |w| on NYU-v2 and Cityscapes
    (prune_utils.py `disparse_prune_pretrained_l1`, create_pruned_net.py lines 72-102) or
    Σ_b |∂L_t/∂w| · w² over 50 batches on Taskonomy (`disparse_prune_pretrained`, lines 195-239),
    and fine-tuned with the mask fixed for RETRAIN_EPOCH extra iterations (1,000 at lr 1e-5 on
    NYU-v2) with a new Adam (launch_training.py lines 112-114).

    Here the dense phase is part of the budget, as for `lth`: dense for `method.pretrain` of
    train.steps (default 20/21, the official proportion), pruned once after that step to the exact
    target (`method.score`: "magnitude" or "gradient", the latter scored on a copy of the model
    on the batches of the next `method.importance_batches` steps), then the rest of train.steps
    fine-tunes with the mask fixed. The fine-tuning continues the run's optimizer and lr schedule
    (no new Adam, no separate fine-tuning lr). `dense_iterations` counts the dense steps.
    """

    name = "disparse_pretrained"
    options_type = DiSparsePretrainedOptions

    def prepare(self, model: nn.Module) -> None:
        """As `DiSparseStatic.prepare` (and Raises as it does), plus the pruning step; raises
        MethodError unless 0 < pruning step (method.pretrain × train.steps) < train.steps."""
        super().prepare(model)
        self.final_step = self.step_at(self.options.pretrain)
        if not 0 < self.final_step < self.steps:
            raise MethodError(f"{self.name}: the pruning step ({self.final_step} = method.pretrain × train.steps) "
                              f"must lie after the first step and before the last ({self.steps})")

    @property
    def dense_iterations(self) -> int:
        """Steps trained dense before the pruning."""
        return self.final_step

    def task_scores(self, model: nn.Module, step: int) -> TaskScores:
        """Per-task scores of the trained model after `step`: |w| for every task ("magnitude"), or
        Σ_b |∂L_t/∂w| · w² over the batches of steps step+1 … step+importance_batches ("gradient",
        on a copy of `model`). Raises MethodError if "gradient" and the method was not bound to the
        engine's context."""
        weights = self.maskset.weights()
        if self.options.score == "magnitude":
            magnitude = {n: w.detach().abs() for n, w in weights.items()}
            tasks = set(self.maskset.component_of.values()) - {"backbone"}
            return {t: magnitude for t in sorted(tasks)}
        scorer, copies = scoring_copy(model, self.maskset)
        grads = loss_gradients(scorer, self.maskset, self.require_context(), step, self.options.importance_batches,
                               per_task=True, weights=copies, absolute=True)
        return {t: {n: g * weights[n].detach().pow(2) for n, g in per.items()} for t, per in grads.items()}

    def update_masks(self, model: nn.Module, step: int) -> None:
        """After the pruning step, prune once to the exact target. Raises MethodError as `task_scores`."""
        if step == self.final_step:
            self.prune_by_consensus(self.task_scores(model, step))


@register_method
class DiSparseDynamic(_DiSparse):
    """`disparse_dynamic`: DiSparse's dynamic sparse training (official train.py `disparse_dynamic_train`).

    - **Start:** random masks with ERK densities per weight tensor (`adapmtl.methods.erk`; official
      dynamic_prune.py `googleAI_ERK`, power scale 0.9, and `erk_init`), exact counts summing to
      the target, each tensor at least the collapse guard's minimum; drawn from the global RNG.
    - **Updates** after steps 0 (before the first step), `update_every`, 2·`update_every`, …,
      while before `reach_at` × train.steps (official: `iteration % INT == 0 and iteration < END`,
      train.py line 165). With α = regrow_fraction · ½(1 + cos(π · step / end)) (official
      `CosineDecay` from PRUNE_RATE over END iterations), each tensor holding k weights drops its
      round(α · k) smallest-magnitude survivors (dynamic_prune.py `dynamic_disparse_prune`) and
      regrows as many of its pruned weights (the just-dropped included) by the tasks'
      gradient magnitudes Σ|∂L_t/∂w| on the next step's batch, scored on a copy of the model in
      train mode (`dynamic_disparse`): in a head tensor by its task's ranking, in a backbone
      tensor by the best rank over the tasks (the union of the tasks' choices, as in the
      official code, made exact); equal gradients go to the larger |w| (so a just-dropped weight,
      which keeps its value if regrown, comes before a pruned zero that no gradient reaches).
      So every tensor keeps its ERK count and the sparsity is exact throughout. A weight dropped
      and regrown at the same update keeps its value (the official code keeps every pruned
      weight's old value in `weight_orig`); other regrown weights start at 0, as in RigL.

    Differences that remain: the official regrowth sums |g| over the current batch split in 2
    parts (NYU-v2, Cityscapes) or 8 (Taskonomy), we take the whole batch; its ERK start leaves
    `backbone.conv1` dense until the update of step 0 (`erk_init`, line 215), ours draws every
    tensor at its ERK count; its regrowth takes each task's top choices whole, so a backbone
    tensor holds more than its ERK count until the next drop (and the final trim at END), ours
    regrows exactly the dropped count.
    """

    name = "disparse_dynamic"
    options_type = DiSparseDynamicOptions

    def prepare(self, model: nn.Module) -> None:
        """As `DiSparseStatic.prepare` (and Raises as it does), plus the update schedule."""
        super().prepare(model)
        self.end = self.step_at(self.options.reach_at)
        self.updates = list(range(0, self.end, self.options.update_every))
        self._update_steps = set(self.updates)
        self.final_step = self.updates[-1] if self.updates else 0

    def erk_counts(self) -> dict[str, int]:
        """{tensor name: weights it keeps}: ERK counts for the exact target (`adapmtl.methods.erk.erk_counts`).
        Raises MethodError when the collapse guard keeps more weights than the target allows."""
        masks = self.maskset
        names = list(masks.masks)
        counts = erk_counts([masks.masks[n].shape for n in names], masks.numel - masks.zeros_for(self.options.target),
                            [keep_count(masks.masks[n].numel(), masks.min_density) for n in names],
                            self.options.erk_power_scale)
        return dict(zip(names, counts))

    def begin(self, model: nn.Module) -> None:
        """Draw the random ERK masks, then make the update of step 0 (on the first step's batch).

        Raises MethodError if the method was not bound to the engine's context, or as `erk_counts`."""
        masks = self.maskset
        counts = self.erk_counts()
        for name, count in counts.items():
            mask = masks.masks[name]
            chosen = torch.zeros(mask.numel(), dtype=torch.bool)
            chosen[torch.randperm(mask.numel())[:count]] = True
            masks.masks[name] = chosen.view_as(mask).to(mask.device)
        shapes = [masks.masks[n].shape for n in counts]
        free = erk_densities(shapes, (masks.numel - masks.zeros_for(self.options.target)) / masks.numel,
                             self.options.erk_power_scale)  # without the guard's floor
        masks.guarded = [n for (n, c), d, s in zip(counts.items(), free, shapes)
                         if c == keep_count(math.prod(s), masks.min_density) and d * math.prod(s) < c]
        masks.apply()
        self.update_masks(model, 0)

    def drop_fraction(self, step: int) -> float:
        """α after `step`: cosine decay from method.regrow_fraction to 0 at reach_at."""
        return self.options.regrow_fraction * 0.5 * (1 + math.cos(math.pi * step / max(1, self.end)))

    def update_masks(self, model: nn.Module, step: int) -> None:
        """At an update step: per tensor, drop the weakest survivors by magnitude and regrow as many
        by the tasks' gradients (class doc). Raises MethodError if the method was not bound to the
        engine's context."""
        if step not in self._update_steps:
            return
        masks = self.maskset
        alpha = self.drop_fraction(step)
        moves = {n: round(alpha * int(m.sum())) for n, m in masks.masks.items()}
        if not any(moves.values()):
            return
        scorer, copies = scoring_copy(model, masks)
        grads = loss_gradients(scorer, masks, self.require_context(), step, 1, per_task=True, weights=copies,
                               absolute=True)
        del scorer, copies
        live = masks.weights()
        for name, move in moves.items():
            if move == 0:
                continue
            mask = masks.masks[name]
            survivors = _top(live[name].abs(), mask, int(mask.sum()) - move)
            candidates = ~survivors
            component = masks.component_of[name]
            users = {t: {name: per[name]} for t, per in grads.items() if component in ("backbone", t)}
            if not users:  # a head no task's loss names: every task's gradient, like the backbone
                users, component = {t: {name: per[name]} for t, per in grads.items()}, "backbone"
            keys = task_rank_keys(users, {name: component}, among={name: candidates},
                                  tiebreak={name: live[name].abs()})[name]
            masks.masks[name] = survivors | _top(-keys, candidates, move)
        masks.apply()
