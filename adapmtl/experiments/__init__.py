"""Experiments that train or evaluate models: the bench (methods × target sparsities × seeds) and
the per-component sensitivity sweep. What they produce, `adapmtl.report` reads and renders.

    bench = load_bench("bench_synthetic", ["bench.seeds=[0]"])
    run_bench(bench)                     # trains every missing run, then writes bench.md/.csv/.json
    result = sensitivity_sweep("runs/quickstart/adapmtl", "backbone")
    adapmtl.report.write_sensitivity(result, "runs/quickstart/adapmtl/sensitivity")
"""
from adapmtl.experiments.aggregate import aggregate, write_outputs
from adapmtl.experiments.bench import Bench, BenchRun, BenchSection, load_bench, run_bench
from adapmtl.experiments.sensitivity import DEFAULT_FRACTIONS, sensitivity_sweep

__all__ = [
    "Bench", "BenchRun", "BenchSection", "DEFAULT_FRACTIONS", "aggregate", "load_bench", "run_bench",
    "sensitivity_sweep", "write_outputs",
]
