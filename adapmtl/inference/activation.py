"""Activations computed by the sparse convolution before them, as it stores its output.

A ReLU, ReLU6 or hardtanh after a convolution is a clamp of its output. Run as its own
PyTorch op it is one more pass over the output in memory, and one more op call: 1–2 ms of a
MobileNetV2 forward at batch 1 on one thread, far more at batch 8, where the expanded maps
do not stay in cache. `fuse_activations` gives the clamp to the `Direct` layer before it
(`Direct.fuse_clamp`; the native kernel clamps as it stores) and removes the activation from
the traced graph, only where that cannot change the result: the layer is called once and
reached no other way, and its output goes to the activation alone. compile_sparse's
whole-model check then covers the fused model.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from adapmtl.inference.direct import Direct
from adapmtl.inference.fold import module_uses

INF = math.inf


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _argument(node: fx.Node, index: int, name: str, default: Any) -> Any:
    """The call's argument `name` (positional `index`), or `default` where it is not given."""
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def _min_max(node: fx.Node) -> tuple[Any, Any] | None:
    """(low, high) of a clamp/clip call (a missing bound: ±inf), or None where it has no bound at all."""
    low, high = _argument(node, 1, "min", None), _argument(node, 2, "max", None)
    if low is None and high is None:
        return None
    return (-INF if low is None else low, INF if high is None else high)


# how each activation module or function clamps, from the module or the call node
MODULE_CLAMPS: dict[type, Callable[[nn.Module], tuple[float, float]]] = {
    nn.ReLU: lambda m: (0.0, INF),
    nn.ReLU6: lambda m: (m.min_val, m.max_val),  # a Hardtanh: its bounds are attributes one may change
    nn.Hardtanh: lambda m: (m.min_val, m.max_val),
}
FUNCTION_CLAMPS: dict[Any, Callable[[fx.Node], tuple[Any, Any] | None]] = {
    F.relu: lambda n: (0.0, INF), torch.relu: lambda n: (0.0, INF), torch.relu_: lambda n: (0.0, INF),
    F.relu6: lambda n: (0.0, 6.0),
    F.hardtanh: lambda n: (_argument(n, 1, "min_val", -1.0), _argument(n, 2, "max_val", 1.0)),
    torch.clamp: _min_max, torch.clip: _min_max,
}
METHOD_CLAMPS: dict[str, Callable[[fx.Node], tuple[Any, Any] | None]] = {
    "relu": lambda n: (0.0, INF), "relu_": lambda n: (0.0, INF),
    "clamp": _min_max, "clamp_": _min_max, "clip": _min_max, "clip_": _min_max,
}


def clamp_of(node: fx.Node, graph_module: fx.GraphModule) -> tuple[float, float] | None:
    """(low, high) if `node` computes a clamp of its first argument with constant bounds (ReLU, ReLU6,
    hardtanh, clamp/clip, as module, function or method), else None. None for a bound that is NaN and for a
    module with forward hooks."""
    if node.op == "call_module":
        module = graph_module.get_submodule(node.target)
        rule = MODULE_CLAMPS.get(type(module))
        bounds = rule(module) if rule and not _has_hooks(module) else None
    elif node.op == "call_function" and node.target in FUNCTION_CLAMPS:
        bounds = FUNCTION_CLAMPS[node.target](node)
    elif node.op == "call_method" and node.target in METHOD_CLAMPS:
        bounds = METHOD_CLAMPS[node.target](node)
    else:
        return None
    # a tensor bound is not constant; a NaN bound makes torch.clamp's output all NaN: both left to PyTorch
    if bounds is None or not all(_number(b) and not math.isnan(b) for b in bounds):
        return None
    return float(bounds[0]), float(bounds[1])


def _has_hooks(module: nn.Module) -> bool:
    """Whether `module` has forward hooks of its own: fused away, they would no longer run."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def fuse_activations(graph_module: fx.GraphModule) -> int:
    """Fuse each clamp-like activation into the `Direct` layer whose output it alone takes (module
    docstring), in place; returns how many were fused. A Direct layer called more than once, or
    reached otherwise, or whose output is used elsewhere too, keeps its activation separate."""
    calls, uses = module_uses(graph_module)
    fused = 0
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or len(node.users) != 1:
            continue
        layer = graph_module.get_submodule(node.target)
        if not isinstance(layer, Direct) or layer.clamp is not None or not calls[id(layer)] == uses[id(layer)] == 1:
            continue
        (activation,) = node.users
        # the layer's output must be the activation's input and nothing else of it
        if not activation.args or activation.args[0] is not node or node in activation.args[1:] \
                or node in activation.kwargs.values():
            continue
        bounds = clamp_of(activation, graph_module)
        if bounds is None:
            continue
        layer.fuse_clamp(*bounds)
        activation.replace_all_uses_with(node)
        graph_module.graph.erase_node(activation)
        fused += 1
    if fused:
        graph_module.delete_all_unused_submodules()
        graph_module.recompile()
    return fused
