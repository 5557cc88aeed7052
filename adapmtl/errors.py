"""Exceptions with messages meant for people: what was wrong, where, what was expected."""


class AdapMTLError(Exception):
    """Base class of every error adapmtl raises on purpose (bad input, bad state)."""


class ComponentError(AdapMTLError, ValueError):
    """The prunable layers of a model cannot be split into components as asked."""


class SparsifyError(AdapMTLError, ValueError):
    """A model cannot be sparsified or finalized in its current state."""


class ExportError(AdapMTLError, ValueError):
    """A model cannot be exported as asked, or an exported file is damaged or not what it claims."""
