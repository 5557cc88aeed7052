"""Task-loss weighting strategies: L = Σ_t w_t · L_t, with w_t detached.

Strategies are interchangeable classes picked by name (`create_weighting`), as in
LibMTL. They see only the per-task loss values of each step (under data-parallel
training: the all-reduced ones), so every rank computes the same weights.

A new strategy is one file: a `TaskWeighting` subclass with a `name` and the keyword
`options` its constructor takes besides (tasks, total_steps), decorated with
`@register_weighting`, imported below.
"""
from adapmtl.weighting.base import WEIGHTINGS, TaskWeighting, WeightingError, create_weighting, register_weighting
from adapmtl.weighting.adaptive import AdaptiveWeighting
from adapmtl.weighting.equal import EqualWeighting

__all__ = ["WEIGHTINGS", "AdaptiveWeighting", "EqualWeighting", "TaskWeighting", "WeightingError",
           "create_weighting", "register_weighting"]
