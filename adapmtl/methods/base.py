"""What every pruning method provides to the engine: one small interface.

The engine builds the model, then calls `prepare` (make it prunable), trains with
`param_groups`, calls `after_step` after every optimizer step, and `finalize` once
at the end on the selected weights. Methods differ only in these four verbs.
"""
from __future__ import annotations

from abc import ABC
from typing import Any, ClassVar

from torch import nn

from adapmtl.engine.config import MethodConfig, TrainConfig
from adapmtl.errors import AdapMTLError
from adapmtl.sparsity import FinalizeReport, SparsityReport


class MethodError(AdapMTLError, ValueError):
    """An unknown method, or a method asked to do what it cannot."""


class Method(ABC):
    """A way of making a multitask model sparse during (or around) training."""

    name: ClassVar[str]
    default_weighting: ClassVar[str] = "equal"
    sparse: ClassVar[bool] = True

    def __init__(self, config: MethodConfig, train: TrainConfig) -> None:
        self.config = config
        self.train = train

    @property
    def weighting(self) -> str:
        """The task weighting: the config's choice, else the method's default."""
        return self.config.weighting or self.default_weighting

    @property
    def selection_start(self) -> int:
        """The first step whose validation may select the final model (once sparsity is final)."""
        return 1

    def prepare(self, model: nn.Module) -> None:
        """Make `model` prunable, in place, before the optimizer is built."""

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimizer parameter groups (default: every parameter, the train config's lr/decay)."""
        return [{"params": list(model.parameters())}]

    def after_step(self, model: nn.Module, step: int) -> SparsityReport | None:
        """Called after optimizer step `step` (1-based); may return a sparsity report."""
        return None

    def finalize(self, model: nn.Module) -> FinalizeReport | None:
        """Leave `model` as an ordinary model at the method's final sparsity."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
