"""What every task weighting shares: the `TaskWeighting` interface, its registry, `create_weighting`."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping, Sequence, TypeVar

from adapmtl.errors import AdapMTLError
from adapmtl.conventions import CONVENTIONS
from adapmtl.registry import Registry


class WeightingError(AdapMTLError, ValueError):
    """A weighting strategy was asked for with an unknown name or impossible settings."""




class TaskWeighting(ABC):
    """Gives each task's loss a weight; `update` with each step's loss values.

    `name`: what `create_weighting` and the config's `method.weighting` call it.
    `options`: the keyword options the constructor takes after (tasks, total_steps);
    `create_weighting` passes on those given and refuses any other.
    `takes_convention`: whether the constructor also takes `convention` ("corrected" or "paper",
    see `CONVENTIONS`); False (the default): the strategy's weights are the same under both, and
    `create_weighting` does not pass it.

    A step uses the weights in one of two orders (`uses_current_losses`):

    * False (default): `weights()` gives the step's weights before its forward pass, from the
      losses of the steps before it; `update(losses)` records the step's losses after it.
    * True: the step's weights depend on its own losses. The trainer first computes the step's
      task losses (averaged over its micro-batches and ranks), then `weights_for(losses)` records
      them and returns the weights that form this same step's weighted loss and backward pass.
    """

    name: ClassVar[str]
    options: ClassVar[tuple[str, ...]] = ()
    takes_convention: ClassVar[bool] = False

    def __init__(self, tasks: Sequence[str], total_steps: int) -> None:
        """tasks: the task names, in order; total_steps: the run's length in optimizer steps.

        Raises WeightingError if `tasks` is empty.
        """
        if not tasks:
            raise WeightingError("a weighting needs at least one task")
        self.tasks = tuple(tasks)
        self.total_steps = total_steps

    @abstractmethod
    def weights(self) -> dict[str, float]:
        """The current weight of every task (they sum to the number of tasks)."""

    def update(self, losses: Mapping[str, float]) -> None:
        """Record this step's loss value of every task (plain floats)."""

    @property
    def uses_current_losses(self) -> bool:
        """Whether a step's weights include that step's own losses (see the class docstring):
        then call `weights_for(losses)` before the backward pass instead of `weights()` before
        the forward and `update(losses)` after the step. False here."""
        return False

    def weights_for(self, losses: Mapping[str, float]) -> dict[str, float]:
        """Record this step's task losses (plain floats, {task: value}) and return the weights to
        apply to them in this same step ({task: weight}): `update(losses)`, then `weights()`.
        Raises what `update` raises (KeyError for a missing task)."""
        self.update(losses)
        return self.weights()

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume this weighting (plain Python values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from what `state_dict` returned."""


WEIGHTINGS: Registry[type[TaskWeighting]] = Registry("weighting", WeightingError)
"""Every registered weighting class by its name."""

W = TypeVar("W", bound=type[TaskWeighting])


def register_weighting(cls: W) -> W:
    """Class decorator: make `cls` available by `cls.name` (`create_weighting`, config `method.weighting`).

    Raises WeightingError if the name is taken by another class.
    """
    return WEIGHTINGS.add(cls.name, cls)


def create_weighting(name: str, tasks: Sequence[str], total_steps: int, *, convention: str = "corrected",
                     **options: Any) -> TaskWeighting:
    """The weighting strategy `name` (see `WEIGHTINGS`: "adaptive", "equal", ...) for `tasks`, in a
    run of `total_steps` optimizer steps, under `convention` ("corrected", default, or "paper": the
    original code's behaviour; passed on only to strategies with `takes_convention`, the others
    weigh alike under both). `options` set to None count as not given.

    Raises WeightingError for an unknown name or convention, an option the strategy does not take
    (each declares its own in `options`), no tasks, or option values the strategy refuses.
    """
    if convention not in CONVENTIONS:
        raise WeightingError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    cls = WEIGHTINGS.get_entry(name)
    given = {k: v for k, v in options.items() if v is not None}
    foreign = {k: v for k, v in given.items() if k not in cls.options}
    if foreign:
        takes = f"takes only {list(cls.options)}" if cls.options else "takes no options"
        raise WeightingError(f"weighting {name!r} {takes}, got {foreign}")
    if cls.takes_convention:
        return cls(tasks, total_steps, convention=convention, **given)
    return cls(tasks, total_steps, **given)
