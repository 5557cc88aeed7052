"""Models by name: `create_model(name, tasks, **kw)`, one registry, the same knobs everywhere.

A new model is one file: a backbone (a callable width → module with `out_channels`, e.g.
its class) decorated with `@register_model("name")`, imported by `adapmtl/models/__init__.py`.
"""
from __future__ import annotations

from typing import Callable, Mapping, TypeVar, overload

from torch import nn

from adapmtl.models.aspp import RATES, ASPPHead
from adapmtl.models.errors import ModelError
from adapmtl.registry import Registry
from adapmtl.models.multitask import MultiTaskModel

BackboneFactory = Callable[[float], nn.Module]
"""width → a backbone module with an `out_channels` attribute."""

B = TypeVar("B", bound=BackboneFactory)

BACKBONES: Registry[BackboneFactory] = Registry("model", ModelError)


@overload
def register_model(name: str) -> Callable[[B], B]: ...
@overload
def register_model(name: str, backbone: B) -> B: ...
def register_model(name: str, backbone: B | None = None) -> B | Callable[[B], B]:
    """Make `create_model(name, ...)` build `backbone(width)` with one ASPP head per task.

    As a decorator at the backbone's definition: `@register_model("name")`; as a call:
    `register_model("name", backbone)`. Either way returns the backbone unchanged.
    Raises ModelError if `name` is taken by another backbone.
    """

    def register(factory: B) -> B:
        return BACKBONES.add(name, factory)

    return register if backbone is None else register(backbone)


def available_models() -> list[str]:
    """The names `create_model` accepts, sorted."""
    return BACKBONES.names()


def create_model(
    name: str,
    tasks: Mapping[str, int],
    *,
    width: float = 1.0,
    head_channels: int = 1024,
    upsample: bool = True,
    dropout: float = 0.5,
    aspp_rates: tuple[int, int, int, int] = RATES,
) -> MultiTaskModel:
    """Build a multitask model: the named backbone + one ASPP head per task.

    name: "deeplab_resnet34" or "mobilenetv2" (see `available_models()`).
    tasks: {task_name: output channels}, e.g. {"segment_semantic": 40, "normal": 3,
        "depth_zbuffer": 1}; the heads follow this order.
    width: backbone channel multiplier (1.0 = the paper).
    head_channels: hidden channels of each ASPP branch (1024 = the paper).
    upsample: return outputs at the input's resolution (True) or the heads' own.
    dropout: the ASPP branches' dropout probability (0.5 = the paper).
    aspp_rates: the dilations of each head's four branches, in pixels of the backbone's output
        ((6, 12, 18, 24) = the paper). A rate at or beyond the side of the backbone's output
        (1/8 of the input for deeplab_resnet34, 1/32 for mobilenetv2) puts that branch's outer
        taps on padding only: their weights get no gradient.
    Defaults give exactly the paper's architecture, initialised as the paper trains it
    (from scratch). Returns a `MultiTaskModel` with `.backbone` and `.heads[task]`.
    Raises ModelError for an unknown name, a bad task table, or a knob out of range.
    """
    factory = BACKBONES.get_entry(name)
    if not isinstance(tasks, Mapping) or not tasks:
        raise ModelError(f"tasks must be a non-empty {{task_name: out_channels}} mapping, got {tasks!r}")
    for task, channels in tasks.items():
        if not isinstance(task, str) or not task:
            raise ModelError(f"task names must be non-empty strings, got {task!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ModelError(f"tasks[{task!r}] must be a positive int (output channels), got {channels!r}")
    if not width > 0:
        raise ModelError(f"width must be > 0, got {width!r}")
    if isinstance(head_channels, bool) or not isinstance(head_channels, int) or head_channels < 1:
        raise ModelError(f"head_channels must be a positive int, got {head_channels!r}")
    if not 0.0 <= dropout < 1.0:
        raise ModelError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    rates = tuple(aspp_rates)
    if len(rates) != 4 or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rates):
        raise ModelError(f"aspp_rates must be four positive ints (dilations), got {aspp_rates!r}")
    backbone = factory(width)
    heads = {task: ASPPHead(backbone.out_channels, channels, head_channels, dropout, rates)
             for task, channels in tasks.items()}
    return MultiTaskModel(backbone, heads, upsample=upsample)
