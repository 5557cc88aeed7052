"""`sparsify`: put a learnable soft threshold on every prunable weight of a model."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from adapmtl.errors import SparsifyError
from adapmtl.sparsity.bank import BANK_ATTRIBUTE, ThresholdBank, find_bank, require_bank
from adapmtl.sparsity.components import ComponentSpec, assign_components
from adapmtl.sparsity.soft_threshold import SoftThreshold

GRANULARITIES = ("component", "layer", "global")


def sparsify(
    model: nn.Module,
    components: ComponentSpec | None = None,
    *,
    init: float = -20.0,
    granularity: str = "component",
    exclude: Iterable[str] = (),
) -> nn.Module:
    """Make every prunable weight of `model` soft-threshold sparse, in place; returns `model`.

    Each prunable weight W (Conv*, ConvTranspose*, Linear; never biases or norm
    layers) is used in the forward pass as sign(W)·relu(|W| − sigmoid(s)), while the
    optimizer keeps updating the dense W (its state_dict key becomes
    `<layer>.parametrizations.weight.original`).

    Args:
        model: any nn.Module. Load dense weights (a pretrained checkpoint) before this call.
        components: {name: module-name prefix or list of prefixes}. None infers
            {"backbone": "backbone", task: "heads.<task>"} from `model.backbone` and
            the nn.ModuleDict `model.heads`.
        init: the initial score s0 of every threshold (τ = sigmoid(s0)); -20 keeps the
            model dense at the start (τ ≈ 2e-9).
        granularity: "component" (one threshold per component: AdapMTL), "layer" (one
            per layer: STR) or "global" (one for the whole model: the ablation). With
            "layer" or "global" and no inferable components, the whole model is
            reported as one component named "model".
        exclude: module-name prefixes or globs of layers to keep dense.

    Raises:
        SparsifyError: the model is already sparsified, or `init`/`granularity` is invalid.
        ComponentError: layers cannot be assigned to exactly one component.
    """
    if granularity not in GRANULARITIES:
        raise SparsifyError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if not isinstance(init, (int, float)) or not math.isfinite(init):
        raise SparsifyError(f"init must be a finite number (the initial threshold score), got {init!r}")
    if find_bank(model) is not None:
        raise SparsifyError(f"this {type(model).__name__} is already sparsified; call adapmtl.finalize(model) first.")

    fallback = None if granularity == "component" else "model"
    component_of = assign_components(model, components, exclude, fallback=fallback)
    layers = dict(model.named_modules())
    _check_layers(layers, component_of)

    if granularity == "component":
        group_names = list(dict.fromkeys(component_of.values()))
        group_of = {name: group_names.index(c) for name, c in component_of.items()}
    elif granularity == "layer":
        group_names = list(component_of)
        group_of = {name: i for i, name in enumerate(group_names)}
    else:
        group_names = ["global"]
        group_of = {name: 0 for name in component_of}

    reference = layers[next(iter(component_of))].weight
    bank = ThresholdBank(group_names, granularity, init).to(device=reference.device, dtype=reference.dtype)
    model.add_module(BANK_ATTRIBUTE, bank)
    for name, component in component_of.items():
        parametrize.register_parametrization(
            layers[name], "weight", SoftThreshold(bank, group_of[name], component), unsafe=True
        )
    return model


def _check_layers(layers: dict[str, nn.Module], component_of: dict[str, str]) -> None:
    seen: dict[int, str] = {}
    for name in component_of:
        module = layers[name]
        if parametrize.is_parametrized(module):
            raise SparsifyError(
                f"layer {name!r} already has a parametrization (e.g. weight_norm or spectral_norm); "
                "remove it or exclude the layer."
            )
        weight = module.weight
        if not isinstance(weight, nn.Parameter) or not weight.is_floating_point():
            raise SparsifyError(f"layer {name!r}: its weight is not a floating-point nn.Parameter; exclude the layer.")
        if id(weight) in seen:
            raise SparsifyError(
                f"layers {seen[id(weight)]!r} and {name!r} share one weight tensor (tied weights); "
                "exclude one of them."
            )
        seen[id(weight)] = name


@dataclass(frozen=True)
class SparseLayer:
    """One sparsified layer: its module name, the module, and its parametrization."""

    name: str
    module: nn.Module
    parametrization: SoftThreshold

    @property
    def dense_weight(self) -> torch.Tensor:
        """The dense W the optimizer updates (not the thresholded Ŵ)."""
        return self.module.parametrizations.weight.original


def sparse_layers(model: nn.Module) -> Iterator[SparseLayer]:
    """Every sparsified layer of `model`, in definition order."""
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, SoftThreshold):
                    yield SparseLayer(name, module, p)


def threshold_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learnable threshold scores, to give them their own optimizer group.

    Returns a list with one parameter: the vector of scores s of all threshold
    groups (τ = sigmoid(s)). Example::

        thresholds = adapmtl.threshold_parameters(model)
        ids = {id(p) for p in thresholds}
        weights = [p for p in model.parameters() if id(p) not in ids]
        torch.optim.Adam([{"params": weights}, {"params": thresholds, "lr": 1e-2}])
    """
    return [require_bank(model, "threshold_parameters").scores]
