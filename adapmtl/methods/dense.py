"""`dense`: the multitask baseline that ΔT is measured against; nothing is pruned."""
from adapmtl.methods.base import Method


class Dense(Method):
    name = "dense"
    sparse = False
