"""BatchNorm folded into the convolution before it, only where that cannot change the result.

`torch.fx.experimental.optimization.fuse` folds a BatchNorm into its conv module even when
that module is also called elsewhere, so the other call gets the BatchNorm too (issue 12).
Here a conv→BN pair is folded only when the conv module is called exactly once, its output
goes only to that BN, the BN module is called once, and neither (nor a tensor of theirs,
nor a module holding them) is reached any other way in the graph. The folded model is then
checked against the original (`ModelCheck`); if it differs it is not used.

`Unfused` modules (the attention and encoder blocks `adapmtl.inference.transformer` puts in
place of PyTorch's fused ones) are kept whole by the tracer, as torch.nn modules are, but since
they reach their children only by calling them, the layers inside count as called.
"""
from __future__ import annotations

import warnings
from collections import Counter

import torch.fx as fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from adapmtl.inference.check import InferenceError, ModelCheck

PAIRS = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}
CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.Sequential)


class Unfused(nn.Module):
    """Base of modules whose forward reaches every child module only by calling it (containers
    of them by iterating): a child layer may then be replaced by any module that computes
    the same. torch.fx does not trace into them (their forward branches on shapes and masks)."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, Unfused) or super().is_leaf_module(module, qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """torch.fx.symbolic_trace, with `Unfused` modules kept whole. Raises what tracing raises."""
    tracer = _Tracer()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _called_within(block: nn.Module):
    """The modules an `Unfused` block calls: its children, and theirs through Unfused blocks and
    containers (not inside any other module, which may read its children's weights)."""
    for child in block.children():
        yield child
        if isinstance(child, (Unfused, *CONTAINERS)):
            yield from _called_within(child)


def module_uses(traced: fx.GraphModule) -> tuple[Counter[int], Counter[int]]:
    """(calls, uses) per module, keyed by id(module): `calls` counts call_module nodes of the
    module itself, and calls of an `Unfused` module holding it (see `_called_within`); `uses`
    counts every node that reaches it: those calls, calls of a module holding it (fx does not
    trace into torch.nn modules), get_attr of it or of its own parameters or buffers, or get_attr
    of a module holding it. The module tree is walked by object, so two attribute names for one module
    count as one module."""
    calls: Counter[int] = Counter()
    uses: Counter[int] = Counter()
    for node in traced.graph.nodes:
        if node.op == "call_module":
            module = traced.get_submodule(node.target)
            calls[id(module)] += 1
            if isinstance(module, Unfused):
                for inner in _called_within(module):
                    calls[id(inner)] += 1
        elif node.op == "get_attr":
            owner, _, attribute = node.target.rpartition(".")
            holder = traced.get_submodule(owner)
            module = getattr(holder, attribute, None)  # None: gone (a layer replaced by a path without it)
            if not isinstance(module, nn.Module):  # a parameter or buffer: its module is reached, not
                uses[id(holder)] += 1               # the modules inside (a ViT's pos_embed is the root's)
                continue
        else:
            continue
        for reached in module.modules():
            uses[id(reached)] += 1
    return calls, uses


def layers_reached_otherwise(traced: fx.GraphModule) -> set[str]:
    """Names of the modules that the graph reaches other than by calling them (a weight read
    by a function, a module inside an untraced one): replacing them would break that use."""
    calls, uses = module_uses(traced)
    return {name for name, module in traced.named_modules() if uses[id(module)] != calls[id(module)]}


def _foldable(node: fx.Node, traced: fx.GraphModule, calls: Counter[int], uses: Counter[int]) -> bool:
    """Whether `node` is a BN call whose input is a conv call and the pair can be folded."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return False
    conv_node = node.args[0]
    if not isinstance(conv_node, fx.Node) or conv_node.op != "call_module" or len(conv_node.users) != 1:
        return False
    conv, bn = traced.get_submodule(conv_node.target), traced.get_submodule(node.target)
    return (PAIRS.get(type(conv)) is type(bn) and bn.track_running_stats and bn.running_mean is not None
            and not (conv.training or bn.training)
            and calls[id(conv)] == uses[id(conv)] == 1 and calls[id(bn)] == uses[id(bn)] == 1)


def fold_batchnorm(model: nn.Module, check: ModelCheck | None) -> tuple[nn.Module, bool]:
    """`model` (in eval mode) traced by torch.fx with every safe conv→BN pair folded into one
    conv, and True; or `model` itself and False where torch.fx cannot trace it or the
    folded model does not give `check`'s outputs (a RuntimeWarning says why). With `check`
    None the caller verifies the folded model itself (compile_sparse does so in the forward
    that captures the layers' inputs, saving a forward per input). `model` is not changed:
    folded convs are new modules."""
    try:
        traced = trace(model)
    except Exception:  # a model torch.fx cannot trace still compiles, without folding
        return model, False
    calls, uses = module_uses(traced)
    for node in list(traced.graph.nodes):
        if _foldable(node, traced, calls, uses):
            conv_node = node.args[0]
            conv, bn = traced.get_submodule(conv_node.target), traced.get_submodule(node.target)
            parent, _, child = conv_node.target.rpartition(".")
            setattr(traced.get_submodule(parent), child, fuse_conv_bn_eval(conv, bn))
            node.replace_all_uses_with(conv_node)
            traced.graph.erase_node(node)
    traced.delete_all_unused_submodules()
    traced.recompile()
    if check is None:
        return traced, True
    try:
        check.verify(traced, "the model with BatchNorm folded")
    except InferenceError as error:
        warnings.warn(f"{error}; compiling without folding BatchNorm", RuntimeWarning, stacklevel=3)
        return model, False
    return traced, True
