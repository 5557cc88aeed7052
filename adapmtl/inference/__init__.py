"""Sparse execution of a finalized model: each layer by its fastest measured path."""
from adapmtl.inference.check import InferenceError, ModelCheck
from adapmtl.inference.compile import LayerChoice, Plan, SparseCompiled, compile_sparse
from adapmtl.inference.csr_linear import CSRLinear
from adapmtl.inference.direct import Direct
from adapmtl.inference.memory import keep_freed_memory
from adapmtl.inference.paths import CSR, Shrunk, candidate_paths
from adapmtl.inference.transformer import unfuse_transformers
from adapmtl.inference.work import Work, core_peak_gflops, layer_work, model_work

__all__ = ["CSR", "CSRLinear", "Direct", "InferenceError", "LayerChoice", "ModelCheck", "Plan", "Shrunk",
           "SparseCompiled", "Work", "candidate_paths", "compile_sparse", "core_peak_gflops", "keep_freed_memory",
           "layer_work", "model_work", "unfuse_transformers"]
