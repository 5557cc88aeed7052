"""The model's learnable threshold scores, one per threshold group, in one place."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from adapmtl.errors import SparsifyError

BANK_ATTRIBUTE = "adapmtl_thresholds"


class ThresholdBank(nn.Module):
    """Holds the scores s (τ = sigmoid(s)) of every threshold group as one vector.

    A group is a component (granularity "component"), a layer ("layer") or the whole
    model ("global"). One vector keeps the report and the controller to one tensor op
    each, and gives the optimizer a single parameter to put in its own group.

    `caps` (a buffer, shape [layers], weight-magnitude units) is the collapse guard: layer l
    uses the threshold min(τ_group, caps[l]), so that its `min_density` share of largest
    weights always survives (`adapmtl.sparsity.guard`; +inf: unguarded). `init` is the
    common initial score s0 every group started from, kept so that a run can say how far
    each score learned.
    """

    def __init__(self, group_names: Sequence[str], granularity: str, init: float, *,
                 layers: int = 0, min_density: float = 0.0) -> None:
        super().__init__()
        self.group_names = tuple(group_names)
        self.granularity = granularity
        self.init = float(init)
        self.min_density = float(min_density)
        self.scores = nn.Parameter(torch.full((len(self.group_names),), float(init)))
        self.register_buffer("caps", torch.full((layers,), float("inf")))

    def thresholds(self) -> torch.Tensor:
        """τ = sigmoid(s) of every group, detached, shape [groups]."""
        return torch.sigmoid(self.scores.detach())

    def get_extra_state(self) -> dict[str, Any]:
        return {"groups": list(self.group_names), "granularity": self.granularity, "init": self.init,
                "min_density": self.min_density}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if list(state.get("groups", [])) != list(self.group_names) or state.get("granularity") != self.granularity:
            raise SparsifyError(
                "the state_dict's thresholds were saved from a model sparsified with "
                f"granularity={state.get('granularity')!r} and {len(state.get('groups', []))} groups "
                f"({_preview(state.get('groups', []))}); this model has granularity="
                f"{self.granularity!r} and {len(self.group_names)} groups ({_preview(self.group_names)}). "
                "Sparsify with the same components and granularity before loading."
            )
        self.init = float(state.get("init", self.init))
        self.min_density = float(state.get("min_density", self.min_density))

    def extra_repr(self) -> str:
        return f"granularity={self.granularity!r}, groups={len(self.group_names)}, min_density={self.min_density:g}"


def _preview(names: Sequence[str], limit: int = 4) -> str:
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", … {len(names) - limit} more" if len(names) > limit else "")


def find_bank(model: nn.Module) -> ThresholdBank | None:
    """The model's threshold bank, looking through wrappers such as DistributedDataParallel."""
    for module in model.modules():
        if isinstance(module, ThresholdBank):
            return module
    return None


def require_bank(model: nn.Module, action: str) -> ThresholdBank:
    """The model's bank, or an error saying that `action` needs a sparsified model.

    Raises SparsifyError if the model was not sparsified.
    """
    bank = find_bank(model)
    if bank is None:
        raise SparsifyError(
            f"{action} needs a model prepared by adapmtl.sparsify(model); "
            f"this {type(model).__name__} has no soft thresholds."
        )
    return bank
