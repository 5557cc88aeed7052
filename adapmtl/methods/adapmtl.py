"""`adapmtl`: the paper's method, with the exact-target controller."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import Field
from torch import nn

import adapmtl.sparsity as sparsity
from adapmtl.methods.base import Method, MethodOptions, ReachAt
from adapmtl.methods.registry import register_method
from adapmtl.sparsity import FinalizeReport, SparsityController, SparsityReport


class ThresholdOptions(MethodOptions):
    """Options of the soft-threshold methods (AdapMTL and its fixed-granularity ablations)."""

    init: Union[Literal["auto"], float] = Field(
        "auto", description="initial threshold score s0, common to every group: 'auto' = logit of the 1 % quantile of "
        "all prunable |W| above 1 % of their median (starts 1 % sparse, within learning reach of the weights' scale, "
        "past a trained model's dead channels); -20 = dense, the original's")
    policy: Literal["exact", "freeze"] = Field(
        "exact", description="target control: see SparsityController. 'freeze' is the original's gate (thresholds held "
        "while the sparsity is at or above the target) and finalize then does not trim: the run ends at the sparsity "
        "the gate left")
    reach_at: ReachAt = 2 / 3
    schedule: Literal["cubic", "linear"] = "cubic"
    interval: Optional[int] = Field(None, ge=1, description="steps between the controller's measurements")


class AdapMTLOptions(ThresholdOptions):
    granularity: Literal["component", "layer", "global"] = "component"


@register_method
class AdapMTL(Method):
    """One learnable soft threshold per component, trained with the weights from
    scratch; adaptive task weighting; the controller brings the overall sparsity to
    the target by `reach_at` and `finalize` trims it to the target exactly (policy "exact",
    docs/method.md §2). Under policy "freeze" (the original code's rule) finalize removes the
    reparameterization without trimming, as the original, and the run ends at whatever
    sparsity the gate left."""

    name = "adapmtl"
    options_type = AdapMTLOptions
    default_weighting = "adaptive"
    granularity: ClassVar[str | None] = None  # None: the options'; the ablations fix it

    def prepare(self, model: nn.Module) -> None:
        o = self.options
        sparsity.sparsify(model, init=o.init, granularity=self.granularity or o.granularity, min_density=o.min_density,
                          **self.scope.arguments())
        self.controller = SparsityController(model, o.target, self.steps, reach_at=o.reach_at, schedule=o.schedule,
                                             policy=o.policy, interval=o.interval)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        thresholds = sparsity.threshold_parameters(model)
        ids = {id(p) for p in thresholds}
        return [{"params": [p for p in model.parameters() if id(p) not in ids]},
                {"params": thresholds, "role": "thresholds"}]

    @property
    def selection_start(self) -> int:
        """Model selection considers only steps where the sparsity is at the target."""
        return self.controller.reach_step

    def after_step(self, model: nn.Module, step: int) -> SparsityReport | None:
        return self.controller.step(step)

    def finalize(self, model: nn.Module) -> FinalizeReport:
        """Remove the soft-threshold reparameterization (`adapmtl.sparsity.finalize`). Policy "exact":
        trimmed to the target within ±0.0005. Policy "freeze": not trimmed (the original has no final
        trim); the report's `target` is None, `trimmed` False, `aimed_at` the option's target and
        `after.overall` the sparsity the run ends at. Raises SparsifyError as `sparsity.finalize`."""
        if self.options.policy == "freeze":
            return replace(sparsity.finalize(model), aimed_at=self.options.target)
        return sparsity.finalize(model, target=self.options.target)

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])


@register_method
class AdapMTLGlobal(AdapMTL):
    """Ablation: one threshold for the whole model (the paper's "without adaptive thresholds")."""

    name = "adapmtl_global"
    options_type = ThresholdOptions
    granularity = "global"


@register_method
class AdapMTLLayer(AdapMTL):
    """Ablation: one threshold per layer, as STR."""

    name = "adapmtl_layer"
    options_type = ThresholdOptions
    granularity = "layer"


@register_method
class AdapMTLEqualWeights(AdapMTL):
    """Ablation: component thresholds, but equal task weights (no adaptive weighting)."""

    name = "adapmtl_equal_weights"
    default_weighting = "equal"
