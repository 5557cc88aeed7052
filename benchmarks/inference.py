"""CPU forward time of the finalized paper models: dense PyTorch vs `compile_sparse`.

Deeplab-ResNet34 and MobileNetV2 with the NYU-v2 heads (40, 3, 1 channels), one
321×321 image and a batch of 8, at 0 / 70 / 90 / 95 % overall sparsity with the paper's
kind of allocation: the backbone at 50 % (more where the heads alone cannot carry the
target: each head at most 97 %) and the heads harder. Every layer is magnitude-pruned
to its component's sparsity (random initialisation; no structure is assumed, so the
"shrunk" path gets nothing for free). Dense and compiled run in alternating rounds
in one process; the printed speedup is the median of the per-round ratios.

    python benchmarks/inference.py [--models deeplab_resnet34 mobilenetv2] [--sparsities 0 0.7 0.9 0.95]
                                   [--batches 1 8] [--rounds 5] [--profile 10] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import textwrap
import time

import torch
from torch import nn

from adapmtl.inference import compile_sparse, native
from adapmtl.inference.speed import compare_speed, slowest_layers
from adapmtl.models import create_model
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


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["deeplab_resnet34", "mobilenetv2"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.0, 0.7, 0.9, 0.95])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--size", type=int, default=321)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", type=int, default=10, help="slowest layers to list at 90 %")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {args.size}x{args.size}; "
          f"native kernel: {native.status()}")
    print(f"{'model':<18} {'sparsity':>8} {'backbone':>8} {'heads':>6} {'batch':>5} {'dense ms':>9} "
          f"{'compiled ms':>11} {'speedup':>8} {'compile s':>9}  paths")
    for name in args.models:
        for overall in args.sparsities:
            torch.manual_seed(0)
            model = create_model(name, TASKS).eval()
            shares = prune(model, overall)
            for batch in args.batches:
                x = torch.randn(batch, 3, args.size, args.size)
                start = time.perf_counter()
                compiled = compile_sparse(model, x, repeats=3)
                compile_seconds = time.perf_counter() - start
                speed = compare_speed(model, compiled, x, args.rounds)
                print(f"{name:<18} {overall:>8.0%} {shares['backbone']:>8.0%} {shares['segment_semantic']:>6.0%} "
                      f"{batch:>5} {1000 * statistics.median(speed.dense_s):>9.0f} "
                      f"{1000 * statistics.median(speed.compiled_s):>11.0f} {speed.speedup:>7.2f}x "
                      f"{compile_seconds:>9.0f}  {compiled.plan.path_counts()}", flush=True)
                if args.profile and abs(overall - 0.9) < 1e-9:
                    print(textwrap.indent(slowest_layers(compiled.plan, args.profile), "    "))


if __name__ == "__main__":
    main()
