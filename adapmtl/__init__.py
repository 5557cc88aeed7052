"""adapmtl: adaptive soft-threshold pruning of multitask networks (AdapMTL, ACM MM 2024).

The public API, re-exported; see README.md.
"""
from adapmtl import errors

__version__ = "0.1.0"

__all__ = ["errors", "__version__"]
