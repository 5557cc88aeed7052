"""Which layers are prunable, and to which component each belongs.

A component is a part of the model whose sparsity is reported (and, with the
paper's granularity, learned) as one: the backbone, or one task's head.
"""
from __future__ import annotations

import fnmatch
from functools import partial
from typing import Iterable, Mapping, Sequence, Union

from torch import nn

from adapmtl.errors import ComponentError

PRUNABLE_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
"""Conv1d/2d/3d, ConvTranspose1d/2d/3d and Linear (and their subclasses)."""

ATTENTION_TENSORS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
"""nn.MultiheadAttention's input projections: bare Parameters, not Linear layers (its `out_proj` is a
Linear). in_proj_weight [3·embed_dim, embed_dim] when q, k, v share embed_dim, else the three others."""

ComponentSpec = Mapping[str, Union[str, Sequence[str]]]

_LIST_LIMIT = 10


def _name_list(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LIST_LIMIT])
    return shown + (f" (… and {len(names) - _LIST_LIMIT} more)" if len(names) > _LIST_LIMIT else "")


def _under(name: str, prefix: str) -> bool:
    """True when module `name` is `prefix` itself or lies inside it (whole name parts only)."""
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _matches(name: str, pattern: str) -> bool:
    """True when `pattern` is a module-name prefix of `name` (whole parts) or a glob matching it."""
    return _under(name, pattern) or fnmatch.fnmatchcase(name, pattern)


def _excluded(name: str, patterns: Sequence[str]) -> bool:
    return any(_matches(name, p) for p in patterns)


def prunable_layers(model: nn.Module, exclude: Iterable[str] = ()) -> dict[str, nn.Module]:
    """The model's prunable layers (Conv, Linear: modules with a `weight`) by module name, in definition order.

    `exclude` holds module-name patterns: a name prefix (`"heads.seg"` covers the
    whole head) or a glob (`"*.classifier"`). A pattern that matches no prunable
    layer is an error, so that a typo never leaves a layer pruned by surprise.
    Raises ComponentError for an `exclude` pattern that matches no layer, or when nothing is left to prune.
    """
    candidates = {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}
    return _select(model, candidates, exclude)


def prunable_weights(model: nn.Module, exclude: Iterable[str] = (), *,
                     embeddings: bool = False, parameters: Iterable[str] = ()) -> dict[str, tuple[nn.Module, str]]:
    """Every prunable weight tensor as {name: (module, attribute)}, in definition order.

    The `weight` of each prunable layer (`prunable_layers`), named by its module, and the
    input projections of every nn.MultiheadAttention (`ATTENTION_TENSORS`), named
    "<module>.<attribute>", e.g. "encoder.layers.0.self_attn.in_proj_weight"; with
    `embeddings=True` also the `weight` [num_embeddings, embedding_dim] of every nn.Embedding;
    and every other floating-point Parameter of 2 or more dimensions whose full name
    (`model.named_parameters()`) matches one of the `parameters` globs or names, e.g.
    `["blocks.*.mlp.w12"]` for a weight a module uses through `F.linear`, named by its parameter name.
    `exclude` as in `prunable_layers`; a module-name prefix covers the attention's tensors too.
    Raises ComponentError for an `exclude` or `parameters` pattern that matches no weight, a
    `parameters` match that is 1-D or not floating point, or when nothing is left to prune.
    """
    candidates: dict[str, tuple[nn.Module, str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) or (embeddings and isinstance(module, nn.Embedding)):
            candidates[name] = (module, "weight")
        elif isinstance(module, nn.MultiheadAttention):
            for attribute in ATTENTION_TENSORS:
                if getattr(module, attribute, None) is not None:
                    candidates[f"{name}.{attribute}" if name else attribute] = (module, attribute)
    candidates.update(_named_parameters(model, parameters, candidates))
    return _select(model, candidates, exclude)


def _named_parameters(model: nn.Module, patterns: Iterable[str],
                      known: dict[str, tuple[nn.Module, str]]) -> dict[str, tuple[nn.Module, str]]:
    """{parameter name: (owner module, attribute)} for the Parameters the `patterns` name, less those in `known`."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if not patterns:
        return {}
    taken = {id(getattr(module, attribute)) for module, attribute in known.values()}
    found: dict[str, tuple[nn.Module, str]] = {}
    unused = set(patterns)
    for name, parameter in model.named_parameters():
        hits = [p for p in patterns if name == p or fnmatch.fnmatchcase(name, p)]
        if not hits:
            continue
        unused.difference_update(hits)
        if id(parameter) in taken:
            continue  # already prunable (a Linear's weight, say): counted once, under its layer's name
        if parameter.dim() < 2 or not parameter.is_floating_point():
            raise ComponentError(f"parameters pattern {hits[0]!r} matches {name!r} ({tuple(parameter.shape)}, "
                                 f"{parameter.dtype}): only floating-point weights of 2 or more dimensions can be "
                                 "pruned; biases and norm scales cannot")
        owner, _, attribute = name.rpartition(".")
        found[name] = (model.get_submodule(owner), attribute)
    if unused:
        eligible = [n for n, p in model.named_parameters() if p.dim() >= 2 and id(p) not in taken]
        raise ComponentError(f"parameters pattern(s) {', '.join(map(repr, sorted(unused)))} match no parameter of "
                             f"{type(model).__name__}; its other weights of 2+ dimensions are: "
                             f"{_name_list(eligible) or 'none'}")
    return found


def _select(model: nn.Module, candidates: dict, exclude: Iterable[str]) -> dict:
    """`candidates` less those `exclude` matches; ComponentError for a pattern matching none, or nothing left."""
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    unused = [p for p in patterns if not any(_excluded(n, [p]) for n in candidates)]
    if unused:
        raise ComponentError(
            f"exclude pattern(s) {', '.join(map(repr, unused))} match no prunable layer; "
            f"prunable layers are: {_name_list(list(candidates))}"
        )
    kept = {n: m for n, m in candidates.items() if not _excluded(n, patterns)}
    if not kept:
        raise ComponentError(
            f"{type(model).__name__} has no prunable layer left (Conv or Linear) "
            + ("after exclude." if patterns else "to sparsify.")
        )
    return kept


def infer_components(model: nn.Module) -> dict[str, list[str]]:
    """Components from the multitask convention: `model.backbone` and `model.heads[task]`.

    Returns {"backbone": ["backbone"], task: ["heads.<task>"], ...}.
    Raises ComponentError if the model has no `backbone` and `heads` ModuleDict to infer from.
    """
    backbone = getattr(model, "backbone", None)
    heads = getattr(model, "heads", None)
    if not isinstance(backbone, nn.Module) or not isinstance(heads, nn.ModuleDict):
        missing = []
        if not isinstance(backbone, nn.Module):
            missing.append("`backbone` (an nn.Module)")
        if not isinstance(heads, nn.ModuleDict):
            missing.append("`heads` (an nn.ModuleDict keyed by task)")
        raise ComponentError(
            f"cannot infer the components of {type(model).__name__}: it has no "
            f"{' and no '.join(missing)}. Pass components={{name: module-name prefix}}, e.g. "
            "{'backbone': 'encoder', 'seg': 'decoders.seg'} (model.components in a run config), or use "
            "granularity='global' or 'layer' (method.name: adapmtl_global or adapmtl_layer)."
        )
    if "backbone" in heads:
        raise ComponentError("a task head is named 'backbone', which clashes with the backbone component; rename the task.")
    components = {"backbone": ["backbone"]}
    components.update({task: [f"heads.{task}"] for task in heads})
    return components


def _normalise(components: ComponentSpec) -> dict[str, list[str]]:
    if not isinstance(components, Mapping) or not components:
        raise ComponentError(
            f"components must be a non-empty mapping {{name: prefix or list of prefixes}}, got {components!r}"
        )
    normalised = {}
    for name, prefixes in components.items():
        if not isinstance(name, str) or not name:
            raise ComponentError(f"component names must be non-empty strings, got {name!r}")
        prefix_list = [prefixes] if isinstance(prefixes, str) else list(prefixes)
        if not prefix_list or not all(isinstance(p, str) for p in prefix_list):
            raise ComponentError(f"component {name!r}: expected a module-name prefix or a list of them, got {prefixes!r}")
        normalised[name] = prefix_list
    return normalised


def assign_components(
    model: nn.Module,
    components: ComponentSpec | None,
    exclude: Iterable[str] = (),
    *,
    fallback: str | None = None,
    attention: bool = False,
    embeddings: bool = False,
    parameters: Iterable[str] = (),
) -> dict[str, str]:
    """Map every prunable layer's name to its component's name.

    With `attention=True`, `embeddings=True` or `parameters` the names are those of
    `prunable_weights(model, exclude, embeddings=embeddings, parameters=parameters)`
    (nn.MultiheadAttention's input projections included), else those of `prunable_layers`.

    `components=None` infers them (see `infer_components`); when that is not
    possible and `fallback` is given, every layer goes to one component of that
    name. A component's patterns are module-name prefixes ("heads.seg") or globs
    ("decoder.*.seg_*"), as in `exclude`. Layers matched by no component, or by two, are an error that names them.
    Raises ComponentError naming the layers in no component or in two, and patterns that match nothing.
    """
    parameters = [parameters] if isinstance(parameters, str) else list(parameters)
    candidates = (partial(prunable_weights, embeddings=embeddings, parameters=parameters)
                  if attention or embeddings or parameters else prunable_layers)
    layers = candidates(model, exclude)
    if components is None:
        try:
            spec = infer_components(model)
        except ComponentError:
            if fallback is None:
                raise
            return {name: fallback for name in layers}
        # an inferred component that exclude= emptied on purpose (say, a dense backbone) is dropped
        everything = candidates(model)
        spec = {
            c: p for c, p in spec.items()
            if any(_matches(n, q) for n in layers for q in p) or not any(_matches(n, q) for n in everything for q in p)
        }
    else:
        spec = _normalise(components)

    module_names = list(dict.fromkeys([n for n, _ in model.named_modules()] + list(layers)))
    for component, prefixes in spec.items():
        for prefix in prefixes:
            if not any(_matches(n, prefix) for n in module_names):
                top = [n for n in module_names if n and "." not in n]
                bare = [n for n, _ in model.named_parameters() if _matches(n, prefix)]
                hint = (f"; it names the Parameter(s) {_name_list(bare)}: prune them with parameters=[...] "
                        "(model.parameters in a run config)" if bare else "")
                raise ComponentError(
                    f"component {component!r}: pattern {prefix!r} matches no module of "
                    f"{type(model).__name__}; its top-level modules are: {_name_list(top)}{hint}"
                )

    owners: dict[str, list[str]] = {name: [] for name in layers}
    for component, prefixes in spec.items():
        for name in layers:
            if any(_matches(name, p) for p in prefixes) and component not in owners[name]:
                owners[name].append(component)

    unassigned = [n for n, owner in owners.items() if not owner]
    if unassigned:
        raise ComponentError(
            f"{len(unassigned)} prunable layer(s) belong to no component: {_name_list(unassigned)}. "
            "Add them to a component (a pattern may name a weight itself, e.g. 'blocks.0.w_qkv') or to exclude=."
        )
    doubly = [f"{n} ({' and '.join(owner)})" for n, owner in owners.items() if len(owner) > 1]
    if doubly:
        raise ComponentError(
            f"{len(doubly)} prunable layer(s) belong to more than one component: {_name_list(doubly)}. "
            "Make the prefixes disjoint."
        )
    empty = [c for c in spec if not any(owner == [c] for owner in owners.values())]
    if empty:
        raise ComponentError(f"component(s) {', '.join(map(repr, empty))} contain no prunable layer (after exclude).")
    return {name: owner[0] for name, owner in owners.items()}
