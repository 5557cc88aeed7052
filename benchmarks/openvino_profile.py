"""OpenVINO's own per-layer profile (`PERF_COUNT`) of a paper model run dense: where a dense runtime spends
its time, to set against the compiled model's slowest-layers list (`benchmarks/inference.py`).

The model is built and magnitude-pruned as in `benchmarks/inference.py` (same allocation; the runtime
gets no sparsity), exported with adapmtl's ONNX export and compiled for the CPU device with the same
settings as the benchmark (INFERENCE_NUM_THREADS, LATENCY hint, float32). Prints the total of the
per-node times, the slowest nodes, and the time per node type. Needs the `bench` extra
(`pip install -e ".[bench]"`).

    python benchmarks/openvino_profile.py [--model mobilenetv2] [--sparsity 0.9] [--threads 1] [--size 321] [--top 25]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch

from adapmtl.export.onnx import write_onnx
from adapmtl.inference.runtimes import openvino_compiled
from adapmtl.models import create_model
from adapmtl.models.spec import ModelSpec

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: the benchmark beside it is a plain module
from inference import TASKS, prune  # noqa: E402  (the same model, allocation and pruning as the benchmark)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n    python")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=321)
    parser.add_argument("--top", type=int, default=25, help="slowest nodes to list")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_model(args.model, TASKS).eval()
    prune(model, args.sparsity)
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        write_onnx(model, ModelSpec(args.model, dict(TASKS)), path, (args.size, args.size))
        compiled = openvino_compiled(path, x, args.threads, PERF_COUNT=True)  # the benchmark's settings
    request = compiled.create_infer_request()
    for _ in range(5):  # the last run's counters are reported
        request.infer({0: x.numpy()})
    rows = sorted(((info.real_time.total_seconds() * 1e3, info.node_name, info.node_type, info.exec_type)
                   for info in request.profiling_info), reverse=True)
    print(f"{args.model} at {args.sparsity:.0%}, {args.threads} thread(s), {args.size}x{args.size}: "
          f"{sum(r[0] for r in rows):.1f} ms over {len(rows)} nodes")
    for ms, name, kind, implementation in rows[:args.top]:
        print(f"  {ms:8.3f} ms  {kind:<18} {implementation:<28} {name[:80]}")
    by_kind: Counter[str] = Counter()
    for ms, _, kind, _ in rows:
        by_kind[kind] += ms
    print("per node type: " + ", ".join(f"{kind} {ms:.1f} ms" for kind, ms in by_kind.most_common()))


if __name__ == "__main__":
    main()
