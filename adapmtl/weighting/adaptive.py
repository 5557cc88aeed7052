"""The paper's adaptive weighting: tasks whose loss moves more under pruning get more weight."""
from __future__ import annotations

import math
from collections import deque
from typing import Any, Mapping, Sequence

from adapmtl.conventions import CONVENTIONS
from adapmtl.weighting.base import TaskWeighting, WeightingError, register_weighting

PAPER_STEPS, PAPER_BEGIN, PAPER_WINDOW = 20_000, 5_000, 500

FLOAT32_TINY = 1.1754943508222875e-38
"""float32's smallest normal number: task losses are float32, and one below it has underflowed."""


def informative(loss: float) -> bool:
    """Whether a task loss can enter the ratio rule: finite and at least `FLOAT32_TINY`.

    0 is what every task's loss is for a batch with no valid pixel (see `adapmtl.tasks`).
    """
    return math.isfinite(loss) and loss >= FLOAT32_TINY


@register_weighting
class AdaptiveWeighting(TaskWeighting):
    """The paper's adaptive weighting mechanism (AdapMTL, Xiang et al., ACM MM 2024): tasks whose
    loss moves more (less robust to the ongoing pruning) get more weight.

    From step `begin` on, each task's relative loss change r_t(i) = |L_t(i−1) − L_t(i)| / L_t(i)
    enters a FIFO window of `window` values; once the window is full, w_t = mean(window),
    renormalised so the weights sum to the number of tasks (not the original's fixed 3).
    Before that every w_t = 1. L_t(i) is step i's task loss (a plain float; under gradient
    accumulation or data-parallel training, the step's average over its micro-batches and ranks).

    Two conventions (`convention`, docs/conventions.md):

    * "corrected" (default): step i is weighted with the weights from the losses of steps
      1 … i−1 (`weights()` before the step, `update(L(i))` after it). `begin`/`window` default
      to the paper's 5000/500 for a 20,000-step run, scaled in proportion to `total_steps`
      (25,000/2,500 for 100,000 steps), so the warm-up and the window are the same share of
      any run (docs/method.md §3).
    * "paper": the original code's behaviour. The ratio of step i includes that step's own
      batch, and the weights that form step i's loss and backward pass already include it
      (`uses_current_losses` is True: the trainer calls `weights_for(L(i))` before the
      backward pass). `begin`/`window` default to 5000/500 whatever the run's length (the
      original keeps them for its 100,000-step Taskonomy runs).

    Steps without information: a task loss that is 0 (every task's loss is exactly 0 for a
    batch with no valid pixel), below float32's smallest normal number (underflowed), negative
    (no loss here can be) or not finite carries no information for the ratio. Such a step
    adds nothing to that task's window and does not become its L(i−1): the task's next ratio
    compares with its last informative loss. Its weight stays what it was until the window
    moves again. (Without this, one batch without valid depth gives r = L/1e-12 and that
    one value holds the weights at about {0, 0, 3} for the whole window.)
    """

    name = "adaptive"
    options = ("begin", "window")
    takes_convention = True

    def __init__(self, tasks: Sequence[str], total_steps: int, begin: int | None = None, window: int | None = None,
                 convention: str = "corrected") -> None:
        """tasks: the task names; total_steps: the run's length in optimizer steps; begin: the step
        after which ratios enter the windows; window: the windows' length in steps (both None: the
        convention's default, see the class docstring); convention: "corrected" or "paper".

        Raises WeightingError if `tasks` is empty, `begin` < 0, `window` < 1 or `convention` is
        not one of `CONVENTIONS`."""
        super().__init__(tasks, total_steps)
        if convention not in CONVENTIONS:
            raise WeightingError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        self.convention = convention
        scale = total_steps / PAPER_STEPS if convention == "corrected" else 1.0
        self.begin = round(PAPER_BEGIN * scale) if begin is None else int(begin)
        self.window = max(1, round(PAPER_WINDOW * scale)) if window is None else int(window)
        if self.begin < 0 or self.window < 1:
            raise WeightingError(f"adaptive weighting needs begin >= 0 and window >= 1, got begin={begin}, window={window}")
        self.step = 0
        self.previous: dict[str, float] = {}  # each task's last informative loss; absent until it has one
        self.history = {t: deque(maxlen=self.window) for t in self.tasks}
        self._weights = {t: 1.0 for t in self.tasks}

    def update(self, losses: Mapping[str, float]) -> None:
        """Record this step's loss of every task (plain floats; see the class docstring for
        which values are skipped). Raises KeyError if a task is missing from `losses`."""
        self.step += 1
        for t in self.tasks:
            current = float(losses[t])
            if not informative(current):
                continue
            if t in self.previous and self.step > self.begin:
                self.history[t].append(abs(self.previous[t] - current) / current)
            self.previous[t] = current
        if all(len(h) == self.window for h in self.history.values()):
            means = {t: sum(h) / self.window for t, h in self.history.items()}
            total = sum(means.values())
            if total > 0:
                self._weights = {t: len(self.tasks) * m / total for t, m in means.items()}

    @property
    def uses_current_losses(self) -> bool:
        """True under "paper": step i's weights include step i's losses (call `weights_for`)."""
        return self.convention == "paper"

    def weights(self) -> dict[str, float]:
        """The weights from every loss recorded so far (all 1 until every task's window is full):
        under "corrected" those of the next step; under "paper" those of the last step recorded."""
        return dict(self._weights)

    def state_dict(self) -> dict[str, Any]:
        """step, previous losses, the windows and the weights, for a checkpoint."""
        return {
            "step": self.step,
            "previous": dict(self.previous),
            "history": {t: list(h) for t, h in self.history.items()},
            "weights": dict(self._weights),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict`. Raises KeyError if `state` lacks an entry or one of the tasks."""
        self.step = state["step"]
        self.previous = dict(state["previous"] or {})  # None: a checkpoint from before the first step
        self.history = {t: deque(state["history"][t], maxlen=self.window) for t in self.tasks}
        self._weights = dict(state["weights"])

