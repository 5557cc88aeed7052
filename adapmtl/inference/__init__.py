"""Sparse execution of a finalized model: each layer by its fastest measured path."""
from adapmtl.inference.check import InferenceError, ModelCheck
from adapmtl.inference.compile import LayerChoice, Plan, SparseCompiled, compile_sparse
from adapmtl.inference.direct import Direct
from adapmtl.inference.paths import CSR, Shrunk, candidate_paths

__all__ = ["CSR", "Direct", "InferenceError", "LayerChoice", "ModelCheck", "Plan", "Shrunk", "SparseCompiled",
           "candidate_paths", "compile_sparse"]
