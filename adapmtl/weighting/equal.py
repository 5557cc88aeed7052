"""Equal weighting: the plain sum of the task losses."""
from __future__ import annotations

from adapmtl.weighting.base import TaskWeighting, register_weighting


@register_weighting
class EqualWeighting(TaskWeighting):
    """w_t = 1 for every task: the plain sum of task losses."""

    name = "equal"

    def weights(self) -> dict[str, float]:
        """{task: 1.0} for every task."""
        return {t: 1.0 for t in self.tasks}
