"""Sparse execution of a finalized model: each layer by its fastest measured path."""
from adapmtl.inference.check import InferenceError, ModelCheck
from adapmtl.inference.compile import LayerChoice, Plan, SparseCompiled, compile_sparse
from adapmtl.inference.csr_linear import CSRLinear
from adapmtl.inference.direct import Direct
from adapmtl.inference.memory import keep_freed_memory
from adapmtl.inference.paths import CSR, Shrunk, candidate_paths
from adapmtl.inference.transformer import unfuse_transformers

__all__ = ["CSR", "CSRLinear", "Direct", "InferenceError", "LayerChoice", "ModelCheck", "Plan", "Shrunk",
           "SparseCompiled", "candidate_paths", "compile_sparse", "keep_freed_memory",
           "unfuse_transformers"]
