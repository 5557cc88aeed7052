"""What every pruning method provides to the engine: one small interface.

The engine builds the model, then calls `prepare` (make it prunable), trains with
`param_groups`, hands the method a `MethodContext` (`bind`: training batches, task
losses, the optimizer's reset), calls `begin` once before the first step of a fresh
run, `after_step` after every optimizer step, and `finalize` once at the end on the
selected weights. Methods differ only in these verbs.
"""
from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import nn

from adapmtl.engine.config import MethodConfig, TrainConfig
from adapmtl.errors import AdapMTLError
from adapmtl.sparsity import FinalizeReport, SparsityReport


class MethodError(AdapMTLError, ValueError):
    """An unknown method, or a method asked to do what it cannot."""


@dataclass
class MethodContext:
    """What the engine lends a method that needs data or the optimizer.

    `batches(start, n)`: the training batches of steps start+1 … start+n (on the
    model's device; the same batches the loop reads at those steps).
    `task_losses(model, batch)`: {task: scalar loss} of one forward pass (train mode).
    `reduce(tensor)`: the mean over data-parallel processes (identity in one process),
    so that every rank derives the same mask.
    `reset_optimizer()`: forget the optimizer's moments and restart the lr schedule.
    """

    batches: Callable[[int, int], Iterator[dict[str, torch.Tensor]]]
    task_losses: Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    reduce: Callable[[torch.Tensor], torch.Tensor]
    reset_optimizer: Callable[[], None]


class Method(ABC):
    """A way of making a multitask model sparse during (or around) training."""

    name: ClassVar[str]
    default_weighting: ClassVar[str] = "equal"
    sparse: ClassVar[bool] = True

    def __init__(self, config: MethodConfig, train: TrainConfig) -> None:
        self.config = config
        self.train = train
        self.context: MethodContext | None = None

    @property
    def weighting(self) -> str:
        """The task weighting: the config's choice, else the method's default."""
        return self.config.weighting or self.default_weighting

    @property
    def selection_start(self) -> int:
        """The first step whose validation may select the final model (once sparsity is final)."""
        return 1

    @property
    def dense_iterations(self) -> int:
        """Optimizer steps of the budget spent training the dense model before pruning."""
        return 0

    def prepare(self, model: nn.Module) -> None:
        """Make `model` prunable, in place, before the optimizer is built."""

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimizer parameter groups (default: every parameter, the train config's lr/decay)."""
        return [{"params": list(model.parameters())}]

    def bind(self, context: MethodContext) -> None:
        """Receive the engine's context (after the model is on its device and the optimizer built)."""
        self.context = context

    def require_context(self) -> MethodContext:
        """The bound context, or a MethodError saying that this method needs the engine."""
        if self.context is None:
            raise MethodError(f"method {self.name!r} needs training batches: call bind(MethodContext(...)) "
                              "before begin/after_step (the engine does this)")
        return self.context

    def begin(self, model: nn.Module) -> None:
        """Called once before the first step of a fresh run (not on resume)."""

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
