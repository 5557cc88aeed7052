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
from typing import Annotated, Any, Callable, ClassVar, Iterator, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from adapmtl.errors import AdapMTLError
from adapmtl.sparsity import FinalizeReport, PruneScope, SparsityReport

# Option types shared by several methods: one definition, the same bounds and wording everywhere.
ReachAt = Annotated[float, Field(gt=0, le=1, description="fraction of train.steps at which the target is reached")]
Steps = Annotated[int, Field(ge=1)]


class MethodError(AdapMTLError, ValueError):
    """An unknown method, or a method asked to do what it cannot."""


class MethodOptions(BaseModel):
    """The `method:` section of a run config: what every method accepts.

    Each method declares its own subclass (`Method.options_type`) next to its code, so
    an option that the chosen method does not have is an error at load time, never
    silently ignored.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field("adapmtl", description="a registered method (see adapmtl.methods.METHODS)")
    target: float = Field(0.9, ge=0, lt=1, description="overall sparsity to end at")
    weighting: Optional[str] = Field(None, description="task weighting (adaptive, equal, ...); default: the method's")
    weighting_options: dict[str, Any] = Field(
        default_factory=dict, description="the chosen weighting's own options, e.g. {begin: 5000, window: 500} "
        "for adaptive (each weighting declares which it takes)")
    min_density: float = Field(0.01, ge=0, le=1, description="collapse guard: every prunable layer keeps at least "
                               "max(1, ceil(min_density x its weights)), its largest; 0 allows a layer to become "
                               "all zero (adapmtl.sparsity.guard)")


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
    options_type: ClassVar[type[MethodOptions]] = MethodOptions
    default_weighting: ClassVar[str] = "equal"
    sparse: ClassVar[bool] = True

    def __init__(self, options: MethodOptions, steps: int, scope: PruneScope = PruneScope()) -> None:
        """`options`: this method's validated options; `steps`: the run's optimizer steps (train.steps);
        `scope`: which weights are prunable and their components (the run's model spec records it)."""
        if not isinstance(options, self.options_type):
            raise MethodError(f"method {self.name!r} takes {self.options_type.__name__}, got {type(options).__name__}")
        self.options = options
        self.steps = steps
        self.scope = scope
        self.context: MethodContext | None = None

    @property
    def weighting(self) -> str:
        """The task weighting: the config's choice, else the method's default."""
        return self.options.weighting or self.default_weighting

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
        """Optimizer parameter groups (default: every parameter, the train config's lr/decay).

        A group with `"role": "thresholds"` holds learnable thresholds: the engine gives it
        (`train.threshold_lr` or `train.lr`) × `train.threshold_lr_scale` and
        `train.threshold_weight_decay` (docs/method.md §2)."""
        return [{"params": list(model.parameters())}]

    def bind(self, context: MethodContext) -> None:
        """Receive the engine's context (after the model is on its device and the optimizer built)."""
        self.context = context

    def require_context(self) -> MethodContext:
        """The bound context, or a MethodError saying that this method needs the engine.

        Raises MethodError if the engine has not bound one.
        """
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
