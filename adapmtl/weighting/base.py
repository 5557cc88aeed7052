"""What every task weighting shares: the `TaskWeighting` interface, its registry, `create_weighting`."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping, Sequence, TypeVar

from adapmtl.errors import AdapMTLError
from adapmtl.registry import Registry


class WeightingError(AdapMTLError, ValueError):
    """A weighting strategy was asked for with an unknown name or impossible settings."""


class TaskWeighting(ABC):
    """Gives each task's loss a weight; `update` with each step's loss values.

    `name`: what `create_weighting` and the config's `method.weighting` call it.
    `options`: the keyword options the constructor takes after (tasks, total_steps);
    `create_weighting` passes on those given and refuses any other.
    """

    name: ClassVar[str]
    options: ClassVar[tuple[str, ...]] = ()

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


def create_weighting(name: str, tasks: Sequence[str], total_steps: int, **options: Any) -> TaskWeighting:
    """The weighting strategy `name` (see `WEIGHTINGS`: "adaptive", "equal", ...) for `tasks`, in a
    run of `total_steps` optimizer steps. `options` set to None count as not given.

    Raises WeightingError for an unknown name, an option the strategy does not take
    (each declares its own in `options`), no tasks, or option values the strategy refuses.
    """
    cls = WEIGHTINGS.get_entry(name)
    given = {k: v for k, v in options.items() if v is not None}
    foreign = {k: v for k, v in given.items() if k not in cls.options}
    if foreign:
        takes = f"takes only {list(cls.options)}" if cls.options else "takes no options"
        raise WeightingError(f"weighting {name!r} {takes}, got {foreign}")
    return cls(tasks, total_steps, **given)
