"""Training-step time of a sparsified model divided by the dense model's, on CPU.

Both models are trained side by side in one run, in alternating rounds, so machine
noise hits both alike; the printed figure is the median of the per-round ratios.

    python benchmarks/overhead.py [--rounds 15] [--steps 10] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import adapmtl


class SmallConvMultitask(nn.Module):
    """A small conv backbone and two conv heads, about 0.2 M weights."""

    def __init__(self) -> None:
        super().__init__()
        def block(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.backbone = nn.Sequential(*block(3, 32, 2), *block(32, 64, 2), *block(64, 64, 1), *block(64, 96, 1))
        self.heads = nn.ModuleDict({
            "segment_semantic": nn.Sequential(nn.Conv2d(96, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 8, 1)),
            "depth_zbuffer": nn.Sequential(nn.Conv2d(96, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 1, 1)),
        })

    def forward(self, x):
        features = self.backbone(x)
        return {task: head(features) for task, head in self.heads.items()}


def make_trainer(sparse: bool, with_controller: bool, total_steps: int):
    torch.manual_seed(0)
    model = SmallConvMultitask()
    controller = None
    if sparse:
        adapmtl.sparsify(model)
        if with_controller:
            controller = adapmtl.SparsityController(model, target=0.9, total_steps=total_steps)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999), weight_decay=1e-4)
    x = torch.randn(16, 3, 64, 64)
    seg = torch.randint(0, 8, (16, 16, 16))
    depth = torch.rand(16, 1, 16, 16)
    state = {"step": 0}

    def train_step():
        out = model(x)
        loss = nn.functional.cross_entropy(out["segment_semantic"], seg) + (out["depth_zbuffer"] - depth).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["step"] += 1
        if controller is not None:
            controller.step(state["step"])

    return model, train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10, help="training steps per round and variant")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    total = (args.rounds + 1) * args.steps
    variants = {
        "dense": make_trainer(False, False, total),
        "sparsified": make_trainer(True, False, total),
        "sparsified + controller": make_trainer(True, True, total),
    }
    for _, step in variants.values():  # warm-up
        for _ in range(args.steps):
            step()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (_, step) in variants.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds x {args.steps} steps")
    print(f"{'variant':<26} {'ms/step (median)':>17} {'ratio to dense (median of rounds)':>34}")
    for name in variants:
        ratios = [t / d for t, d in zip(times[name], times["dense"])]
        print(f"{name:<26} {1000 * statistics.median(times[name]):>17.1f} {statistics.median(ratios):>34.3f}")
    sparse_model = variants["sparsified + controller"][0]
    print(f"final sparsity with controller: {adapmtl.sparsity_report(sparse_model).overall:.4f}")


if __name__ == "__main__":
    main()
