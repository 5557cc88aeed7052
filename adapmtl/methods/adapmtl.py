"""`adapmtl`: the paper's method, with the exact-target controller."""
from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

import adapmtl.sparsity as sparsity
from adapmtl.methods.base import Method
from adapmtl.sparsity import FinalizeReport, SparsityController, SparsityReport


class AdapMTL(Method):
    """One learnable soft threshold per component, trained with the weights from
    scratch; adaptive task weighting; the controller brings the overall sparsity to
    the target by `reach_at` and `finalize` trims it to the target exactly."""

    name = "adapmtl"
    default_weighting = "adaptive"
    granularity: ClassVar[str | None] = None  # None: the config's; the ablations fix it

    def prepare(self, model: nn.Module) -> None:
        sparsity.sparsify(model, init=self.config.init, granularity=self.granularity or self.config.granularity)
        self.controller = SparsityController(
            model, self.config.target, self.train.steps, reach_at=self.config.reach_at,
            schedule=self.config.schedule, policy=self.config.policy, interval=self.config.interval,
        )

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        thresholds = sparsity.threshold_parameters(model)
        ids = {id(p) for p in thresholds}
        group = {"params": thresholds}
        if self.train.threshold_lr is not None:
            group["lr"] = self.train.threshold_lr
        if self.train.threshold_weight_decay is not None:
            group["weight_decay"] = self.train.threshold_weight_decay
        return [{"params": [p for p in model.parameters() if id(p) not in ids]}, group]

    @property
    def selection_start(self) -> int:
        """Model selection considers only steps where the sparsity is at the target."""
        return self.controller.reach_step

    def after_step(self, model: nn.Module, step: int) -> SparsityReport | None:
        return self.controller.step(step)

    def finalize(self, model: nn.Module) -> FinalizeReport:
        return sparsity.finalize(model, target=self.config.target)

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])


class AdapMTLGlobal(AdapMTL):
    """Ablation: one threshold for the whole model (the paper's "without adaptive thresholds")."""

    name = "adapmtl_global"
    granularity = "global"


class AdapMTLLayer(AdapMTL):
    """Ablation: one threshold per layer, as STR."""

    name = "adapmtl_layer"
    granularity = "layer"


class AdapMTLEqualWeights(AdapMTL):
    """Ablation: component thresholds, but equal task weights (no adaptive weighting)."""

    name = "adapmtl_equal_weights"
    default_weighting = "equal"
