"""`dense`: the multitask baseline that ΔT is measured against; nothing is pruned."""
from adapmtl.methods.base import Method
from adapmtl.methods.registry import register_method


@register_method
class Dense(Method):
    name = "dense"
    sparse = False
