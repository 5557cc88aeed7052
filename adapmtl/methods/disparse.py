"""`disparse_static` and `disparse_dynamic`: DiSparse (Sun et al., CVPR 2022).

DiSparse treats every task on its own. Task t scores the weights it uses, the backbone
and its own head, with SNIP's connection sensitivity computed from t's loss alone,
|∂L_t/∂w · w|, accumulated over `method.importance_batches` training batches; each task
keeps its top fraction q of those weights. A head weight follows its own task's decision;
a backbone weight is pruned only when every task agrees it is unimportant (it survives if
any task keeps it).

Choices we made (the paper leaves them open, the authors' code hand-tunes them):

- **Exact overall sparsity.** The authors pick the keep ratio q per dataset and target by
  hand so the union lands near the target. We turn the rule into one key per weight (its
  rank fraction within task t's ranking for a head weight, the smallest over tasks for a
  backbone weight; `task_rank_keys`) and keep exactly the weights with the lowest keys:
  this is the rule above for the q that meets the target to the weight, found without
  tuning. Ties are broken by position.
- **Static** (`disparse_static`): the mask is computed once at initialisation and fixed
  (the paper's static setting; weights stay at their initial values, as in our SNIP).
- **Dynamic** (`disparse_dynamic`): starts from the static mask, then every
  `method.update_every` steps until `method.reach_at` of training it drops a fraction α of
  the surviving weights by magnitude (global) and regrows as many pruned weights by the
  same per-task rule, scored by each task's gradient magnitude |∂L_t/∂w| on the current
  step's batch (pruned weights are zero, so |g| is what a regrown weight would see). α
  decays from `method.regrow_fraction` to 0 along a cosine, as in the authors' code (which
  follows RigL). Regrown weights start at zero (RigL), and the count of zeros never changes,
  so the sparsity stays exact throughout. The authors prune each layer to an ERK density
  and regrow per layer; we rank globally, like every other mask method here.
"""
from __future__ import annotations

import math

from torch import nn

from pydantic import Field

from adapmtl.methods.base import MethodError, ReachAt, Steps
from adapmtl.methods.importance import loss_gradients, task_rank_keys
from adapmtl.methods.masks import MaskedMethod
from adapmtl.methods.registry import register_method
from adapmtl.methods.snip import ImportanceOptions


class DiSparseDynamicOptions(ImportanceOptions):
    reach_at: ReachAt = 2 / 3
    update_every: Steps = Field(50, description="steps between mask updates")
    regrow_fraction: float = Field(0.3, gt=0, lt=1, description="initial drop/regrow fraction")


@register_method
class DiSparseStatic(MaskedMethod):
    """Per-task SNIP importance at initialisation; backbone weights pruned only by consensus."""

    name = "disparse_static"
    options_type = ImportanceOptions

    def prepare(self, model: nn.Module) -> None:
        """Set up the masks. Raises MethodError if the model has no `backbone` component,
        ComponentError if it has no prunable layer or a head named "backbone"."""
        super().prepare(model)
        if "backbone" not in set(self.maskset.component_of.values()):
            raise MethodError(f"{self.name} needs a multitask model with `backbone` and `heads` "
                              "(DiSparse prunes the backbone by the tasks' consensus)")

    def begin(self, model: nn.Module) -> None:
        """Score weights per task on the first training batches and fix the consensus mask.

        Raises MethodError if the method was not bound to the engine's context."""
        grads = loss_gradients(model, self.maskset, self.require_context(), 0, self.options.importance_batches,
                               per_task=True)
        weights = self.maskset.weights()
        scores = {t: {n: (g * weights[n].detach()).abs() for n, g in per.items()} for t, per in grads.items()}
        keys = task_rank_keys(scores, self.maskset.component_of)
        self.maskset.keep_top({n: -k for n, k in keys.items()},
                              self.maskset.numel - self.maskset.zeros_for(self.options.target))


@register_method
class DiSparseDynamic(DiSparseStatic):
    """DiSparse with periodic magnitude drop and per-task consensus regrowth (see module doc)."""

    name = "disparse_dynamic"
    options_type = DiSparseDynamicOptions

    def prepare(self, model: nn.Module) -> None:
        """As `DiSparseStatic.prepare` (and Raises as it does), plus the update schedule."""
        super().prepare(model)
        self.end = self.step_at(self.options.reach_at)
        self.updates = list(range(self.options.update_every, self.end + 1, self.options.update_every))
        self.final_step = self.updates[-1] if self.updates else 0

    def drop_fraction(self, step: int) -> float:
        """α after `step`: cosine decay from method.regrow_fraction to 0 at reach_at."""
        return self.options.regrow_fraction * 0.5 * (1 + math.cos(math.pi * step / max(1, self.end)))

    def update_masks(self, model: nn.Module, step: int) -> None:
        """At an update step: drop the weakest survivors by magnitude and regrow as many by
        per-task gradient consensus. Raises MethodError if the method was not bound to the engine's context."""
        if step not in self.updates:
            return
        masks = self.maskset
        kept = masks.numel - masks.zeros
        n_move = int(self.drop_fraction(step) * kept)
        if n_move == 0:
            return
        grads = loss_gradients(model, masks, self.require_context(), step, 1, per_task=True)
        survivors = {n: m.clone() for n, m in masks.masks.items()}
        masks.keep_top({n: w.abs() for n, w in masks.weights().items()}, kept - n_move, among=survivors)
        pruned = {n: ~m for n, m in masks.masks.items()}
        keys = task_rank_keys({t: {n: g.abs() for n, g in per.items()} for t, per in grads.items()},
                              masks.component_of, among=pruned)
        masks.keep_top({n: -k for n, k in keys.items()}, n_move, among=pruned)  # regrown weights are 0 here
