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
from adapmtl.sparsity.components import ComponentSpec, assign_components, prunable_weights
from adapmtl.sparsity.guard import DEFAULT_MIN_DENSITY, check_min_density, layer_cap
from adapmtl.sparsity.soft_threshold import SoftThreshold

GRANULARITIES = ("component", "layer", "global")
AUTO_INIT_SPARSITY = 0.01
"""init="auto" starts at this overall sparsity: nearly dense, but with every threshold at the scale
of the weights, so that learning (not a jump of the controller) carries it to the target."""
NEGLIGIBLE_WEIGHT = 1e-2
"""auto_init skips weights with |w| at most this fraction of the median |w|: the dead and dying channels
of a trained model, which weight decay drives towards 0 in a continuum (on the bench's pretrained
model 2.6 % lie below 1e-6 and 5.6 % below 1e-4, with a median of 0.019). Counted, they put the 1 %
quantile at 5e-10 (score -21.5), 13 logits below the live weights, which only the controller could
cross; skipped, it starts at -7.9, where the same model trained from scratch starts (-7.6)."""


def sparsify(
    model: nn.Module,
    components: ComponentSpec | None = None,
    *,
    init: float | str = -20.0,
    granularity: str = "component",
    exclude: Iterable[str] = (),
    min_density: float = DEFAULT_MIN_DENSITY,
    embeddings: bool = False,
    parameters: Iterable[str] = (),
) -> nn.Module:
    """Make every prunable weight of `model` soft-threshold sparse, in place; returns `model`.

    Each prunable weight W (of Conv*, ConvTranspose*, Linear, and nn.MultiheadAttention's
    input projections `in_proj_weight` or `q/k/v_proj_weight`, and nn.Embedding with
    `embeddings=True`; never biases or norm layers) is used in the forward pass as sign(W)·relu(|W| − sigmoid(s)), while the
    optimizer keeps updating the dense W (its state_dict key becomes
    `<layer>.parametrizations.<weight>.original`). Attention reads its projections through the
    parametrization in every mode, PyTorch's fused eval fast path included.

    Args:
        model: any nn.Module. Load dense weights (a pretrained checkpoint) before this call.
        components: {name: module-name prefix or list of prefixes}. None infers
            {"backbone": "backbone", task: "heads.<task>"} from `model.backbone` and
            the nn.ModuleDict `model.heads`.
        init: the initial score s0 of every threshold (τ = sigmoid(s0)); -20 keeps the
            model dense at the start (τ ≈ 2e-9). "auto": s0 = logit of the AUTO_INIT_SPARSITY
            (1 %) quantile of all prunable |W| but the negligible ones (`auto_init`), one common value for every group,
            so the model starts 1 % sparse and each score starts within learning reach of the
            weights' scale (with Adam a score moves at most ~lr per step: docs/method.md §2).
        granularity: "component" (one threshold per component: AdapMTL), "layer" (one
            per layer: STR) or "global" (one for the whole model: the ablation). With
            "layer" or "global" and no inferable components, the whole model is
            reported as one component named "model".
        exclude: module-name prefixes or globs of layers to keep dense.
        min_density: the collapse guard (`adapmtl.sparsity.guard`): every layer keeps at least
            max(1, ⌈min_density · n⌉) of its n weights, its largest; 0 allows a layer to
            become all zero.
        embeddings: also prune every nn.Embedding's weight (off by default: a row's zeros change
            that token's vector outright; `sparsity_report` lists embeddings as left dense otherwise).
        parameters: names or globs of other Parameters (2-D or more) to prune, e.g. a weight a
            module uses through `F.linear`: `["blocks.*.w_qkv"]` (`prunable_weights`).

    Raises:
        SparsifyError: the model is already sparsified, `init`/`granularity`/`min_density`/`embeddings`
            is invalid, (with embeddings=True) an nn.Embedding has max_norm or sparse=True, or the
            model is a `torch.compile` wrapper (sparsify first, then compile: one graph results).
        ComponentError: layers cannot be assigned to exactly one component.
    """
    if hasattr(model, "_orig_mod"):  # torch.compile's wrapper: its parameters carry an "_orig_mod." prefix
        raise SparsifyError("sparsify the model before torch.compile, not its compiled wrapper: "
                            "adapmtl.sparsify(model); compiled = torch.compile(model)")
    if granularity not in GRANULARITIES:
        raise SparsifyError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if init != "auto" and (not isinstance(init, (int, float)) or not math.isfinite(init)):
        raise SparsifyError(f"init must be a finite number (the initial threshold score) or 'auto', got {init!r}")
    min_density = check_min_density(min_density)
    if not isinstance(embeddings, bool):
        raise SparsifyError(f"embeddings must be True or False (prune nn.Embedding weights), got {embeddings!r}")
    if find_bank(model) is not None:
        raise SparsifyError(f"this {type(model).__name__} is already sparsified; call adapmtl.finalize(model) first.")

    fallback = None if granularity == "component" else "model"
    component_of = assign_components(model, components, exclude, fallback=fallback, attention=True,
                                     embeddings=embeddings, parameters=parameters)
    tensors = prunable_weights(model, exclude, embeddings=embeddings, parameters=parameters)
    _check_layers(tensors)

    if granularity == "component":
        group_names = list(dict.fromkeys(component_of.values()))
        group_of = {name: group_names.index(c) for name, c in component_of.items()}
    elif granularity == "layer":
        group_names = list(component_of)
        group_of = {name: i for i, name in enumerate(group_names)}
    else:
        group_names = ["global"]
        group_of = {name: 0 for name in component_of}

    if init == "auto":
        init = auto_init([_tensor(tensors[name]) for name in component_of])
    reference = _tensor(tensors[next(iter(component_of))])
    bank = ThresholdBank(group_names, granularity, init, layers=len(component_of), min_density=min_density)
    bank.to(device=reference.device, dtype=reference.dtype)
    with torch.no_grad():
        for index, name in enumerate(component_of):
            bank.caps[index] = layer_cap(_tensor(tensors[name]), min_density)
    model.add_module(BANK_ATTRIBUTE, bank)
    orders = {id(module): tuple(module._parameters) for module, _ in tensors.values()}  # before any is moved
    for index, (name, component) in enumerate(component_of.items()):
        module, attribute = tensors[name]
        parametrize.register_parametrization(
            module, attribute, SoftThreshold(bank, group_of[name], component, index, orders[id(module)]), unsafe=True
        )
    return model


@torch.no_grad()
def auto_init(weights: list[torch.Tensor], sparsity: float = AUTO_INIT_SPARSITY) -> float:
    """logit(q) for q the `sparsity` quantile of |w| over all `weights`: the common initial score at
    which one threshold would make that share of them zero. Exact zeros and negligible weights
    (|w| ≤ NEGLIGIBLE_WEIGHT × the median |w|: dead channels, pruned by any threshold) are skipped, so
    the score starts at the scale of the live weights; -20 (dense) when every weight is zero.
    """
    magnitude = torch.cat([w.detach().abs().flatten().double().cpu() for w in weights])
    magnitude = magnitude[magnitude > 0]
    if magnitude.numel():
        magnitude = magnitude[magnitude > NEGLIGIBLE_WEIGHT * float(magnitude.median())]
    if magnitude.numel() == 0:
        return -20.0
    q = float(magnitude.kthvalue(max(1, math.ceil(sparsity * magnitude.numel()))).values)
    q = min(q, 0.5)  # a score above 0 (τ > 0.5) would prune nearly any trained weight
    return math.log(q) - math.log1p(-q)


def _tensor(entry: tuple[nn.Module, str]) -> torch.Tensor:
    module, attribute = entry
    return getattr(module, attribute)


def _check_layers(tensors: dict[str, tuple[nn.Module, str]]) -> None:
    seen: dict[int, str] = {}
    for name, (module, attribute) in tensors.items():
        if parametrize.is_parametrized(module):
            raise SparsifyError(
                f"layer {name!r} already has a parametrization (e.g. weight_norm or spectral_norm); "
                "remove it or exclude the layer."
            )
        if isinstance(module, nn.Embedding) and (module.max_norm is not None or module.sparse):
            raise SparsifyError(
                f"embedding {name!r} has max_norm={module.max_norm} and sparse={module.sparse}: both rewrite or "
                "bypass the weight a threshold reads; exclude the embedding or build it with neither."
            )
        weight = getattr(module, attribute)
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
    """One sparsified weight: its name (the module's, or "<module>.<attribute>" for an attention
    projection: `adapmtl.sparsity.components.prunable_weights`), the module, its parametrization and
    the attribute it parametrizes ("weight", or e.g. "in_proj_weight")."""

    name: str
    module: nn.Module
    parametrization: SoftThreshold
    attribute: str = "weight"

    @property
    def dense_weight(self) -> torch.Tensor:
        """The dense W the optimizer updates (not the thresholded Ŵ)."""
        return getattr(self.module.parametrizations, self.attribute).original


def sparse_layers(model: nn.Module) -> Iterator[SparseLayer]:
    """Every sparsified weight of `model`, in definition order."""
    for name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for attribute, parametrizations in module.parametrizations.items():
            for p in parametrizations:
                if isinstance(p, SoftThreshold):
                    label = name if attribute == "weight" else (f"{name}.{attribute}" if name else attribute)
                    yield SparseLayer(label, module, p, attribute)


@torch.no_grad()
def refresh_caps(model: nn.Module) -> None:
    """Recompute every layer's collapse-guard cap from its current dense weights
    (`adapmtl.sparsity.guard.layer_cap`); the controller does this at each measurement and
    `finalize` before it trims, so the guard follows the weights as they train.

    Raises SparsifyError when `model` is not sparsified.
    """
    bank = require_bank(model, "refresh_caps")
    for layer in sparse_layers(model):
        bank.caps[layer.parametrization.layer] = layer_cap(layer.dense_weight, bank.min_density)


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
