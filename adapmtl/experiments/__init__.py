"""Experiments that train or evaluate models: the bench (methods × target sparsities × seeds) and
the per-component sensitivity sweep. What they produce, `adapmtl.report` reads and renders.

    bench = load_bench("bench_synthetic", ["bench.seeds=[0]"])
    run_bench(bench)                     # trains every missing run, then writes bench.md/.csv/.json
    analyse(bench).label                 # "setting valid: ..." or "setting invalid: <why>"
    result = sensitivity_sweep("runs/quickstart/adapmtl", "backbone")
    adapmtl.report.write_sensitivity(result, "runs/quickstart/adapmtl/sensitivity")
"""
from adapmtl.experiments.aggregate import Analysis, aggregate, analyse, component_numel, write_outputs
from adapmtl.experiments.bench import Bench, BenchRun, BenchSection, cross_evaluate, load_bench, run_bench
from adapmtl.experiments.sensitivity import DEFAULT_FRACTIONS, sensitivity_sweep

__all__ = [
    "Analysis", "Bench", "BenchRun", "BenchSection", "DEFAULT_FRACTIONS", "aggregate", "analyse", "component_numel",
    "cross_evaluate", "load_bench", "run_bench", "sensitivity_sweep", "write_outputs",
]
