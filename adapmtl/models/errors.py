"""The error `adapmtl.models` raises for bad model requests."""
from adapmtl.errors import AdapMTLError


class ModelError(AdapMTLError, ValueError):
    """A model cannot be built as asked (unknown name, bad task table, bad knob)."""
