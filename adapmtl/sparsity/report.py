"""How sparse a model is: overall, per component, per layer."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch
from torch import nn

from adapmtl.sparsity.bank import find_bank
from adapmtl.sparsity.components import ComponentSpec, assign_components
from adapmtl.sparsity.sparsify import sparse_layers


@dataclass(frozen=True)
class LayerSparsity:
    """One layer: its component, threshold group and the group's τ (None when not sparsified);
    `guarded`: the collapse guard's cap, not τ, sets this layer's threshold (it keeps its
    min_density share of weights; `adapmtl.sparsity.guard`)."""

    component: str
    numel: int
    zeros: int
    group: str | None = None
    threshold: float | None = None
    guarded: bool = False

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel


@dataclass(frozen=True)
class ComponentSparsity:
    """One component; `threshold` is its τ when all its layers share one threshold, else None."""

    numel: int
    zeros: int
    threshold: float | None = None

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel


@dataclass(frozen=True)
class SparsityReport:
    """Sparsity = zeros / prunable weights; `overall` is weighted by element count."""

    numel: int
    zeros: int
    components: dict[str, ComponentSparsity]
    layers: dict[str, LayerSparsity] = field(repr=False)
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def overall(self) -> float:
        return self.zeros / self.numel

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for JSON logs, sparsities included."""
        def with_sparsity(entry: Any) -> dict[str, Any]:
            return {**asdict(entry), "sparsity": entry.sparsity}

        return {
            "overall": self.overall,
            "numel": self.numel,
            "zeros": self.zeros,
            "components": {k: with_sparsity(v) for k, v in self.components.items()},
            "layers": {k: with_sparsity(v) for k, v in self.layers.items()},
            "thresholds": dict(self.thresholds),
        }

    @property
    def collapsed(self) -> list[str]:
        """The layers whose every weight is zero (their output no longer depends on their input)."""
        return [name for name, layer in self.layers.items() if layer.zeros == layer.numel]

    @property
    def guarded(self) -> list[str]:
        """The layers the collapse guard keeps at their minimum density."""
        return [name for name, layer in self.layers.items() if layer.guarded]

    def __str__(self) -> str:
        rows = [f"{'component':<20} {'sparsity':>9} {'weights':>12} {'threshold':>11}"]
        for name, c in self.components.items():
            tau = f"{c.threshold:.3e}" if c.threshold is not None else "-"
            rows.append(f"{name:<20} {c.sparsity:>9.2%} {c.numel:>12,} {tau:>11}")
        rows.append(f"{'overall':<20} {self.overall:>9.2%} {self.numel:>12,}")
        return "\n".join(rows)


def sparsity_report(
    model: nn.Module, components: ComponentSpec | None = None, exclude: Iterable[str] = ()
) -> SparsityReport:
    """Measure the sparsity of `model`'s prunable weights.

    On a sparsified model, a weight counts as zero when |W| ≤ min(τ of its group, the
    layer's guard cap) (exactly the zeros of Ŵ); `components`/`exclude` are then ignored. On any other model
    (finalized, or pruned by masks), exact zeros are counted and components are
    inferred as in `sparsify`, or given here. Cheap enough for every training step:
    one reduction per layer and a single host transfer for all of them.
    """
    bank = find_bank(model)
    if bank is None:
        return _report_plain(model, components, exclude)
    layers = list(sparse_layers(model))
    with torch.no_grad():
        taus = bank.thresholds()
        groups = torch.tensor([layer.parametrization.group for layer in layers], device=taus.device)
        caps = bank.caps[[layer.parametrization.layer for layer in layers]].to(taus.dtype)
        effective = torch.minimum(taus[groups], caps)
        counts = [(layer.dense_weight.abs() <= effective[i]).sum() for i, layer in enumerate(layers)]
        guarded = (caps < taus[groups]).to(taus.dtype)
        values = torch.cat([torch.stack(counts).to(taus.dtype), guarded, taus]).double().tolist()  # the one sync
    n = len(layers)
    zeros, guards, tau_values = values[:n], values[n: 2 * n], values[2 * n:]
    group_tau = dict(zip(bank.group_names, tau_values))
    per_layer = {
        layer.name: LayerSparsity(
            component=layer.parametrization.component,
            numel=layer.dense_weight.numel(),
            zeros=int(z),
            group=bank.group_names[layer.parametrization.group],
            threshold=tau_values[layer.parametrization.group],
            guarded=bool(g),
        )
        for layer, z, g in zip(layers, zeros, guards)
    }
    return _summarise(per_layer, group_tau)


def _report_plain(model: nn.Module, components: ComponentSpec | None, exclude: Iterable[str]) -> SparsityReport:
    component_of = assign_components(model, components, exclude, fallback="model")
    modules = dict(model.named_modules())
    return report_exact_zeros({name: (c, modules[name].weight) for name, c in component_of.items()})


def report_exact_zeros(weights: dict[str, tuple[str, torch.Tensor]]) -> SparsityReport:
    """Report of exact zeros in {layer name: (component, weight)}, with one host transfer."""
    with torch.no_grad():
        counts = torch.stack([(w == 0).sum() for _, w in weights.values()]).tolist()
    per_layer = {
        name: LayerSparsity(component=c, numel=w.numel(), zeros=int(z))
        for (name, (c, w)), z in zip(weights.items(), counts)
    }
    return _summarise(per_layer, {})


def _summarise(per_layer: dict[str, LayerSparsity], group_tau: dict[str, float]) -> SparsityReport:
    components: dict[str, ComponentSparsity] = {}
    for name in dict.fromkeys(layer.component for layer in per_layer.values()):
        members = [layer for layer in per_layer.values() if layer.component == name]
        groups = {layer.group for layer in members}
        threshold = members[0].threshold if len(groups) == 1 else None
        components[name] = ComponentSparsity(
            numel=sum(m.numel for m in members), zeros=sum(m.zeros for m in members), threshold=threshold
        )
    return SparsityReport(
        numel=sum(c.numel for c in components.values()),
        zeros=sum(c.zeros for c in components.values()),
        components=components,
        layers=per_layer,
        thresholds=group_tau,
    )
