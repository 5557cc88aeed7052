"""CPU forward time of the finalized paper models: `compile_sparse` against dense PyTorch, ONNX Runtime
and OpenVINO.

Deeplab-ResNet34 and MobileNetV2 with the NYU-v2 heads (40, 3, 1 channels), one
321×321 image and a batch of 8, at 0 / 70 / 90 / 95 % overall sparsity with the paper's
kind of allocation: the backbone at 50 % (more where the heads alone cannot carry the
target: each head at most 97 %) and the heads harder. Every layer is magnitude-pruned
to its component's sparsity (random initialisation; no structure is assumed, so the
"shrunk" path gets nothing for free).

The dense runtimes run adapmtl's own ONNX export of the same finalized model (dense: they get
no sparsity, only their own graph optimisations): ONNX Runtime (all default optimisations,
intra-op threads = torch's, one inter-op thread, sequential) and OpenVINO where installed
(`pip install -e ".[bench]"`; CPU device, INFERENCE_NUM_THREADS = torch's, LATENCY hint,
float32). Each runtime's outputs are checked against dense PyTorch before it is timed. All
contenders run in alternating rounds in one process, each round in a shuffled (seeded) order so
that none always follows the same one, 20 ms apart so that one pool's spinning threads do not slow
the next (ONNX Runtime's, which spun longer, stop when its run returns: adapmtl.inference.runtimes);
times are medians. Columns: "sp." the overall sparsity, "bb" and "head" the backbone's and each head's,
"thr" threads, "bat" the batch; "vs dense" is the median of the per-round ratios; "vs best rt" = the faster
runtime's median / compiled's median (the issue 17 goal: 2×). "compile s": compile_sparse's time;
"reload s": compile_sparse with the saved plan. Each row's "arithmetic" line gives the forward's
multiply-adds and every contender's rate in GFLOP/s against the cores' measured peak: ours over the
useful multiply-adds (nonzero weight, input inside the image), the runtimes' over the dense ones. At
90 % the slowest layers of the plan are listed (each path's time, ms, and the chosen path's useful
rate). Unless `--default-malloc`, glibc is first asked to keep freed memory (`keep_freed_memory`):
otherwise PyTorch, dense and compiled alike, page-faults its large tensors back in on every forward
once the process holds more memory (+60 % at batch 8), which the runtimes, with their own arenas,
never pay. A full run takes about 40 minutes on two cores (ResNet34 at batch 8: about 9 minutes a
row); time on a quiet machine.

    python benchmarks/inference.py [--models deeplab_resnet34 mobilenetv2] [--sparsities 0 0.7 0.9 0.95]
                                   [--batches 1 8] [--threads 1 2] [--rounds 5] [--profile 10]
                                   [--runtimes onnxruntime openvino]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import torch
from torch import nn

from adapmtl.inference import compile_sparse, native
from adapmtl.inference.memory import keep_freed_memory
from adapmtl.export.onnx import write_onnx
from adapmtl.inference.runtimes import RUNTIMES, available_runtimes, max_difference
from adapmtl.inference.speed import slowest_layers, time_alternating
from adapmtl.inference.work import Work, core_peak_gflops, model_work
from adapmtl.models import create_model
from adapmtl.models.spec import ModelSpec
from adapmtl.sparsity import assign_components

TASKS = {"segment_semantic": 40, "normal": 3, "depth_zbuffer": 1}
MAX_HEAD_SPARSITY = 0.97


def allocation(model: nn.Module, overall: float) -> dict[str, float]:
    """Backbone 50 % and heads solved to hit `overall` (heads ≤ 97 %, backbone raised if needed)."""
    component_of = assign_components(model, None)
    modules = dict(model.named_modules())
    numel: dict[str, int] = {}
    for name, component in component_of.items():
        numel[component] = numel.get(component, 0) + modules[name].weight.numel()
    total, backbone = sum(numel.values()), numel["backbone"]
    heads = total - backbone
    backbone_sparsity = min(0.5, overall)
    head_sparsity = (overall * total - backbone_sparsity * backbone) / heads
    if head_sparsity > MAX_HEAD_SPARSITY:
        head_sparsity = MAX_HEAD_SPARSITY
        backbone_sparsity = (overall * total - head_sparsity * heads) / backbone
    return {c: backbone_sparsity if c == "backbone" else head_sparsity for c in numel}


@torch.no_grad()
def prune(model: nn.Module, overall: float) -> dict[str, float]:
    """Magnitude-prune each layer to its component's sparsity; returns the allocation."""
    shares = allocation(model, overall)
    modules = dict(model.named_modules())
    for name, component in assign_components(model, None).items():
        weight = modules[name].weight
        k = round(shares[component] * weight.numel())
        if k:
            threshold = weight.abs().flatten().kthvalue(k).values
            weight.mul_(weight.abs() > threshold)
    return shares


def _ms(seconds: list[float]) -> float:
    return 1000 * statistics.median(seconds)


@torch.no_grad()
def measure(name: str, overall: float, shares: dict[str, float], model: nn.Module, onnx_path: Path, batch: int,
            threads: int, args: argparse.Namespace, plan_dir: Path, works: dict[int, dict[str, Work]]) -> None:
    """One row: compile (and reload) for `batch` images on `threads` threads, check the runtimes, time all.
    `works`: the model's multiply-adds per batch size, filled on first need (a dense forward: the same for
    every thread count)."""
    torch.set_num_threads(threads)
    x = torch.randn(batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    compiled = compile_sparse(model, x, repeats=3)
    compile_seconds = time.perf_counter() - start
    plan = plan_dir / f"{name}-{overall}-{batch}-{threads}.json"
    compiled.plan.save(plan)
    start = time.perf_counter()
    compiled = compile_sparse(model, x, plan=plan)
    reload_seconds = time.perf_counter() - start
    runners = {runtime: RUNTIMES[runtime](onnx_path, x, threads) for runtime in args.runtimes}
    differences = {runtime: max_difference(run, model, x) for runtime, run in runners.items()}
    times = time_alternating({"dense": model, "compiled": compiled, **runners}, x, args.rounds, pause_s=0.02)
    dense, fast = _ms(times["dense"]), _ms(times["compiled"])
    vs_dense = statistics.median(d / c for d, c in zip(times["dense"], times["compiled"]))
    runtime_ms = {runtime: _ms(times[runtime]) for runtime in runners}
    vs_best = f"{min(runtime_ms.values()) / fast:>9.2f}x" if runtime_ms else f"{'-':>10}"
    columns = " ".join(f"{runtime_ms[r]:>11.0f}" if r in runtime_ms else f"{'-':>11}" for r in RUNTIMES)
    print(f"{name:<17} {overall:>4.0%} {shares['backbone']:>4.0%} {shares['segment_semantic']:>4.0%} {threads:>3} "
          f"{batch:>3} {dense:>8.0f} {fast:>8.0f} {columns} {vs_dense:>7.2f}x {vs_best} "
          f"{compile_seconds:>9.1f} {reload_seconds:>8.2f}  {compiled.plan.path_counts()}", flush=True)
    if differences:
        print("    runtimes' max |difference| from dense PyTorch: "
              + ", ".join(f"{r} {d:.2g}" for r, d in differences.items()))
    if batch not in works:
        works[batch] = model_work(model, x)
    work = works[batch]
    print("    " + _rates(work, threads, {"compiled": fast, **runtime_ms}, args.core_peak), flush=True)
    if args.profile and abs(overall - 0.9) < 1e-9:
        print(textwrap.indent(slowest_layers(compiled.plan, args.profile, work), "    "), flush=True)


def _rates(work: dict[str, Work], threads: int, median_ms: dict[str, float], core_peak: float | None) -> str:
    """The forward's multiply-adds and each contender's rate: ours over the useful ones (what it must do),
    the runtimes' over the dense ones (what they do), against the peak of `threads` cores."""
    total = sum(work.values(), Work(0, 0))
    peak = core_peak * threads if core_peak else None
    parts = []
    for name, ms in median_ms.items():
        kind, count = ("useful", total.useful) if name == "compiled" else ("dense", total.dense)
        gflops = 2 * count / ms / 1e6
        parts.append(f"{name} {gflops:.0f} GFLOP/s {kind}" + (f" ({gflops / peak:.0%} of peak)" if peak else ""))
    return (f"arithmetic: {total.useful / 1e9:.2f} G useful multiply-adds (nonzero weight, input inside the image), "
            f"{total.dense / 1e9:.2f} G dense; " + (f"peak {peak:.0f} GFLOP/s; " if peak else "") + ", ".join(parts))


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n    python")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["deeplab_resnet34", "mobilenetv2"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.0, 0.7, 0.9, 0.95])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--size", type=int, default=321)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", type=int, default=10, help="slowest layers to list at 90 %%")
    parser.add_argument("--threads", nargs="+", type=int, default=[torch.get_num_threads()],
                        help="torch (and runtime) thread counts, each measured in turn (default: torch's choice)")
    parser.add_argument("--runtimes", nargs="*", default=available_runtimes(), choices=list(RUNTIMES),
                        help="dense runtimes to compare with (default: those installed; none: only dense PyTorch)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (default: keep_freed_memory(), as a PyTorch inference "
                             "process would; the runtimes keep their own arenas either way)")
    args = parser.parse_args()
    malloc = "glibc default" if args.default_malloc else (
        "freed memory kept (adapmtl.inference.memory)" if keep_freed_memory() else "not glibc: as it is")
    args.core_peak = core_peak_gflops()
    peak = f"{args.core_peak:.0f} GFLOP/s (measured; n threads: n times that)" if args.core_peak else "unknown (no kernel)"
    print(f"torch {torch.__version__}, threads {args.threads}, input {args.size}x{args.size}; "
          f"native kernel: {native.status()}; runtimes: {_versions(args.runtimes)}; malloc: {malloc}; "
          f"one core's multiply-add peak: {peak}")
    print(f"{'model':<17} {'sp.':>4} {'bb':>4} {'head':>4} {'thr':>3} {'bat':>3} {'dense ms':>8} {'ours ms':>8} "
          + " ".join(f"{r + ' ms':>11}" for r in RUNTIMES)
          + f" {'vs dense':>8} {'vs best rt':>10} {'compile s':>9} {'reload s':>8}  paths")
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models:
            for overall in args.sparsities:
                torch.manual_seed(0)
                model = create_model(name, TASKS).eval()
                shares = prune(model, overall)
                onnx_path = Path(scratch) / f"{name}-{overall}.onnx"
                if args.runtimes:
                    write_onnx(model, ModelSpec(name, dict(TASKS)), onnx_path, (args.size, args.size))
                works: dict[int, dict[str, Work]] = {}
                for threads in args.threads:
                    for batch in args.batches:
                        measure(name, overall, shares, model, onnx_path, batch, threads, args, Path(scratch), works)


def _versions(runtimes: list[str]) -> str:
    found = []
    for runtime in runtimes:
        module = __import__(runtime)
        found.append(f"{runtime} {getattr(module, '__version__', '?')}")
    return ", ".join(found) or "none"


if __name__ == "__main__":
    main()
