"""The model's learnable threshold scores, one per threshold group, in one place."""
from __future__ import annotations

import json
import zlib
from typing import Sequence

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

    Its state_dict holds tensors only (safetensors and EMA over `state_dict().values()` work):
    `scores`, `caps`, `init_score` and `guard_min_density` (0-d) and `groups_fingerprint` (0-d
    int64, `groups_fingerprint()`). Loading raises SparsifyError when the saved groups differ from
    this bank's; a state_dict saved by older adapmtl (with `_extra_state`) still loads.
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
        # the state_dict holds tensors only (safetensors, EMA, Trainer checkpoints): init and
        # min_density as 0-d buffers, the groups as a fingerprint checked on load
        self.register_buffer("init_score", torch.tensor(self.init))
        self.register_buffer("guard_min_density", torch.tensor(self.min_density))
        self.register_buffer("groups_fingerprint", torch.tensor(groups_fingerprint(self.group_names, granularity)))

    def thresholds(self) -> torch.Tensor:
        """τ = sigmoid(s) of every group, detached, shape [groups]."""
        return torch.sigmoid(self.scores.detach())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        legacy = state_dict.pop(prefix + "_extra_state", None)
        if legacy is not None:  # saved by adapmtl before its state_dicts became tensor-only
            self._check_groups(legacy.get("granularity"), legacy.get("groups", []))
            state_dict.setdefault(prefix + "init_score", torch.tensor(float(legacy.get("init", self.init))))
            state_dict.setdefault(prefix + "guard_min_density",
                                  torch.tensor(float(legacy.get("min_density", self.min_density))))
            state_dict.setdefault(prefix + "groups_fingerprint", self.groups_fingerprint.clone())
        saved = state_dict.get(prefix + "groups_fingerprint")
        if isinstance(saved, torch.Tensor) and saved.numel() == 1 and int(saved) != int(self.groups_fingerprint):
            self._check_groups(None, None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self.init = float(self.init_score)
        self.min_density = float(self.guard_min_density)

    def _check_groups(self, granularity: str | None, groups: Sequence[str] | None) -> None:
        """Raise SparsifyError unless the saved threshold groups (None: unknown, known to differ) are this bank's."""
        if groups is not None and list(groups) == list(self.group_names) and granularity == self.granularity:
            return
        saved = ("different threshold groups" if groups is None else
                 f"granularity={granularity!r} and {len(groups)} groups ({_preview(groups)})")
        raise SparsifyError(
            f"the state_dict's thresholds were saved from a model sparsified with {saved}; this model has "
            f"granularity={self.granularity!r} and {len(self.group_names)} groups ({_preview(self.group_names)}). "
            "Sparsify with the same components and granularity before loading."
        )

    def extra_repr(self) -> str:
        return f"granularity={self.granularity!r}, groups={len(self.group_names)}, min_density={self.min_density:g}"


def groups_fingerprint(group_names: Sequence[str], granularity: str) -> int:
    """A 31-bit CRC of the granularity and the ordered group names: saved in the state_dict so that loading
    into a model sparsified with other groups fails with a clear error (an int, exact in any dtype ≥ int32)."""
    return zlib.crc32(json.dumps([granularity, list(group_names)]).encode()) & 0x7FFFFFFF


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
