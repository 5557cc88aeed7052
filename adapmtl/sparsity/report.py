"""How sparse a model is: overall, per component, per layer."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch
from torch import nn

from adapmtl.sparsity.bank import find_bank
from adapmtl.sparsity.components import ComponentSpec, assign_components, prunable_weights
from adapmtl.sparsity.sparsify import sparse_layers


_DENSE_SHOWN = 5
"""How many of the largest dense parameters a report's text names."""


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
    """Sparsity = zeros / prunable weights; `overall` is weighted by element count.

    `overall` is over the `numel` prunable weights only (those in `layers`); every other parameter
    of the model (biases, norm layers, embeddings, excluded layers; not the threshold scores) is
    listed in `dense_params` {parameter name: numel}, and `pruned_share` is the prunable weights'
    share of all parameters, so the sparsity of the whole model is overall · pruned_share.
    """

    numel: int
    zeros: int
    components: dict[str, ComponentSparsity]
    layers: dict[str, LayerSparsity] = field(repr=False)
    thresholds: dict[str, float] = field(default_factory=dict)
    dense_params: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def overall(self) -> float:
        """zeros / numel: the sparsity of the prunable weights (not of every parameter: see `pruned_share`)."""
        return self.zeros / self.numel

    @property
    def pruned_share(self) -> float:
        """The prunable weights' share of all the model's parameters, in [0, 1]."""
        return self.numel / (self.numel + sum(self.dense_params.values()))

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
            "dense_params": dict(self.dense_params),
            "pruned_share": self.pruned_share,
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
        dense = sum(self.dense_params.values())
        rows.append(f"overall is over the {self.numel:,} prunable weights, {self.pruned_share:.2%} of all "
                    f"{self.numel + dense:,} parameters; {len(self.dense_params)} parameter(s) of {dense:,} "
                    "values are left dense" + (":" if self.dense_params else ""))
        largest = sorted(self.dense_params.items(), key=lambda item: -item[1])
        rows += [f"  {name:<40} {numel:>12,}" for name, numel in largest[:_DENSE_SHOWN]]
        if len(largest) > _DENSE_SHOWN:
            rows.append(f"  … and {len(largest) - _DENSE_SHOWN} more of {sum(n for _, n in largest[_DENSE_SHOWN:]):,} values")
        return "\n".join(rows)


def sparsity_report(
    model: nn.Module, components: ComponentSpec | None = None, exclude: Iterable[str] = (), *,
    embeddings: bool = False, parameters: Iterable[str] = (),
) -> SparsityReport:
    """Measure the sparsity of `model`'s prunable weights (`prunable_weights`: Conv, Linear and attention
    projections); every other parameter is listed in the report's `dense_params`.

    On a sparsified model, a weight counts as zero when |W| ≤ min(τ of its group, the
    layer's guard cap) (exactly the zeros of Ŵ); `components`/`exclude`/`embeddings` are then ignored. On any other model
    (finalized, or pruned by masks), exact zeros are counted and components are
    inferred as in `sparsify`, or given here; `embeddings=True` counts nn.Embedding weights as
    prunable, as `sparsify(..., embeddings=True)` does (else they are listed as left dense), and
    `parameters` names other Parameters counted as prunable, as in `sparsify`. Pass a run's
    `PruneScope.arguments()` to measure what that run pruned. Cheap enough for every training step:
    one reduction per layer and a single host transfer for all of them.
    """
    bank = find_bank(model)
    if bank is None:
        return _report_plain(model, components, exclude, embeddings, parameters)
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
    dense = dense_parameters(model, [layer.dense_weight for layer in layers] + [bank.scores])
    return _summarise(per_layer, group_tau, dense)


def dense_parameters(model: nn.Module, counted: list[torch.Tensor]) -> dict[str, int]:
    """{name: numel} of `model`'s parameters other than the `counted` tensors (compared by identity)."""
    ids = {id(t) for t in counted}
    return {name: p.numel() for name, p in model.named_parameters() if id(p) not in ids}


def _report_plain(model: nn.Module, components: ComponentSpec | None, exclude: Iterable[str],
                  embeddings: bool, parameters: Iterable[str]) -> SparsityReport:
    component_of = assign_components(model, components, exclude, fallback="model", attention=True,
                                     embeddings=embeddings, parameters=parameters)
    tensors = prunable_weights(model, exclude, embeddings=embeddings, parameters=parameters)
    weights = {name: (c, getattr(*tensors[name])) for name, c in component_of.items()}
    return report_exact_zeros(weights, dense_parameters(model, [w for _, w in weights.values()]))


def report_exact_zeros(weights: dict[str, tuple[str, torch.Tensor]],
                       dense_params: dict[str, int]) -> SparsityReport:
    """Report of exact zeros in {layer name: (component, weight)}, with one host transfer; `dense_params`
    {name: numel} are the model's other parameters (`dense_parameters`)."""
    with torch.no_grad():
        counts = torch.stack([(w == 0).sum() for _, w in weights.values()]).tolist()
    per_layer = {
        name: LayerSparsity(component=c, numel=w.numel(), zeros=int(z))
        for (name, (c, w)), z in zip(weights.items(), counts)
    }
    return _summarise(per_layer, {}, dense_params)


def _summarise(per_layer: dict[str, LayerSparsity], group_tau: dict[str, float],
               dense_params: dict[str, int]) -> SparsityReport:
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
        dense_params=dense_params,
    )
