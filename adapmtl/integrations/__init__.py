"""Integrations with the trainers people use: Lightning and Hugging Face `Trainer`.

    from adapmtl.integrations.lightning import AdapMTLCallback           # pip install "adapmtl[lightning]"
    from adapmtl.integrations.transformers import AdapMTLTrainerCallback # pip install "adapmtl[transformers]"

This package itself is framework-neutral (neither it nor `import adapmtl` imports Lightning or
transformers); it re-exports what both callbacks are made of, for other loops:

* `SparsifyRecipe`: sparsify → the thresholds' optimizer group and the controller → finalize;
* `threshold_lr`, `threshold_param_groups`, `split_threshold_group`: the scores' own optimizer group
  with the engine's learning-rate rule (`adapmtl.sparsity.budget`; docs/method.md §2);
* `plain_state_dict`: a sparsified model's (or checkpoint's) weights as the unmodified model's
  state_dict, holding Ŵ with exact zeros (`adapmtl.sparsity.plain`).
"""
from adapmtl.integrations.optim import (
    THRESHOLD_ROLE, split_threshold_group, threshold_group_index, threshold_lr, threshold_param_groups,
    unwrap_optimizer,
)
from adapmtl.integrations.recipe import SparsifyRecipe
from adapmtl.sparsity.plain import plain_state_dict

__all__ = [
    "THRESHOLD_ROLE", "SparsifyRecipe", "plain_state_dict", "split_threshold_group", "threshold_group_index",
    "threshold_lr", "threshold_param_groups", "unwrap_optimizer",
]
