"""CPU time of a ViT-Small-shaped encoder at 90 % sparsity: dense PyTorch vs `compile_sparse`.

Twelve pre-norm blocks, width 384, 6 heads, MLP 1536, GELU, on 197 tokens (a 224×224 image in
16×16 patches plus the class token), batch 1: the encoder only, its input the embedded tokens.
Two ways to write the block: "timm" (our own module as timm writes it: a qkv Linear,
scaled_dot_product_attention, proj, fc1, fc2) and "torch" (nn.TransformerEncoderLayer, whose
dense baseline is PyTorch's fused eval path; compile_sparse unfuses it). Every Linear weight and
attention in-projection is magnitude-pruned to --sparsity after a random initialisation
(unstructured). Dense and compiled run side by side in one process, in alternating rounds; the
printed figures are medians over the rounds (ratios: median of the per-round ratios).

Per layer kind (the layers of block 0 on their real input): dense F.linear (for the torch block's
in-projection, PyTorch's one packed [1152, 384] product), PyTorch's sparse CSR product (the
fallback) and the native sparse Linear kernel (the "csr" path), with multiply-adds per second
(dense: all of them; sparse: the nonzeros only); the speedup is dense against the kernel.
End to end: the whole encoder, dense against compiled.

    python benchmarks/vit_linear.py [--threads 1 2] [--sparsity 0.9] [--blocks timm torch] [--rounds 7]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from adapmtl.inference import compile_sparse, native
from adapmtl.inference.paths import build_path
from adapmtl.inference.speed import compare_speed

DIM, HEADS, MLP, DEPTH, TOKENS = 384, 6, 1536, 12, 197


class Block(nn.Module):
    """A ViT block as timm writes it (pre-norm, qkv Linear, fused attention, GELU MLP)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(DIM, eps=1e-6), nn.LayerNorm(DIM, eps=1e-6)
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.fc1, self.act, self.fc2 = nn.Linear(DIM, MLP), nn.GELU(), nn.Linear(MLP, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(batch, tokens, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, DIM))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


def build(kind: str) -> nn.Module:
    """The encoder, block kind "timm" or "torch", in eval mode."""
    if kind == "timm":
        return nn.Sequential(*[Block() for _ in range(DEPTH)], nn.LayerNorm(DIM, eps=1e-6)).eval()
    layer = nn.TransformerEncoderLayer(DIM, HEADS, MLP, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True, layer_norm_eps=1e-6)
    return nn.TransformerEncoder(layer, DEPTH, norm=nn.LayerNorm(DIM, eps=1e-6), enable_nested_tensor=False).eval()


@torch.no_grad()
def prune(model: nn.Module, sparsity: float) -> None:
    """Magnitude-prune every Linear weight and attention in-projection to `sparsity`, each on its own."""
    for module in model.modules():
        for name in ("weight", "in_proj_weight"):
            weight = getattr(module, name, None) if isinstance(module, (nn.Linear, nn.MultiheadAttention)) else None
            if isinstance(weight, torch.Tensor) and (k := round(sparsity * weight.numel())):
                weight.mul_(weight.abs() > weight.abs().flatten().kthvalue(k).values)


def alternate(runs: dict[str, Callable[[], object]], rounds: int, seconds: float = 0.05) -> dict[str, list[float]]:
    """Seconds per call of each run, per round; within a round the runs follow one another, each
    repeated for about `seconds` (the repeat count is fixed after a warm-up)."""
    repeats = {}
    for name, run in runs.items():
        run()
        start = time.perf_counter()
        run()
        repeats[name] = max(1, int(seconds / max(time.perf_counter() - start, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(repeats[name]):
                run()
            times[name].append((time.perf_counter() - start) / repeats[name])
    return times


def per_kind(kind: str, model: nn.Module, x: torch.Tensor) -> dict[str, tuple[Callable, Callable, Callable, int, int]]:
    """{layer kind: (dense run, PyTorch CSR run, native kernel run, dense multiply-adds, nonzero
    multiply-adds)} for block 0."""
    inputs: dict[str, torch.Tensor] = {}
    if kind == "timm":
        block = model[0]
        names = {"qkv": [block.qkv], "proj": [block.proj], "fc1": [block.fc1], "fc2": [block.fc2]}
        hooks = [layers[0].register_forward_pre_hook(lambda m, a, n=n: inputs.setdefault(n, a[0]))
                 for n, layers in names.items()]
        model(x)
        for hook in hooks:
            hook.remove()
        dense = {n: (lambda layer=layers[0], n=n: layer(inputs[n])) for n, layers in names.items()}
        weights = {n: [layers[0].weight] for n, layers in names.items()}
    else:
        layer = model.layers[0]
        attention = layer.self_attn
        normed = layer.norm1(x)
        inputs = {"qkv": normed}
        names = {"qkv": None, "proj": [attention.out_proj], "fc1": [layer.linear1], "fc2": [layer.linear2]}
        # the inputs the fused path gives out_proj, linear1 and linear2
        attended = F.scaled_dot_product_attention(*F.linear(normed, attention.in_proj_weight, attention.in_proj_bias)
                                                  .reshape(1, TOKENS, 3, HEADS, -1).permute(2, 0, 3, 1, 4))
        inputs["proj"] = attended.transpose(1, 2).reshape(1, TOKENS, DIM)
        hidden = layer.norm2(x + attention.out_proj(inputs["proj"]))
        inputs["fc1"], inputs["fc2"] = hidden, F.gelu(layer.linear1(hidden))
        dense = {"qkv": lambda: F.linear(normed, attention.in_proj_weight, attention.in_proj_bias)}
        dense.update({n: (lambda m=names[n][0], n=n: m(inputs[n])) for n in ("proj", "fc1", "fc2")})
        weights = {"qkv": list(attention.in_proj_weight.chunk(3))}
        weights.update({n: [names[n][0].weight] for n in ("proj", "fc1", "fc2")})
    runs = {}
    for n, ws in weights.items():
        layers = []
        for w in ws:
            linear = nn.Linear(w.shape[1], w.shape[0])
            linear.weight = nn.Parameter(w.detach().clone())
            layers.append(build_path(linear.eval(), "csr").linear)  # a CSRLinear
        rows = inputs[n].reshape(-1, inputs[n].shape[-1])
        native_run = lambda layers=layers, n=n: [layer(inputs[n]) for layer in layers]
        pytorch_run = lambda layers=layers, rows=rows: [layer._pytorch(rows) for layer in layers]
        macs = sum(w.numel() for w in ws) * TOKENS
        nonzero = sum(int(w.ne(0).sum()) for w in ws) * TOKENS
        runs[n] = (dense[n], pytorch_run, native_run, macs, nonzero)
    return runs


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--blocks", nargs="+", choices=["timm", "torch"], default=["timm", "torch"])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}; native Linear kernel: {native.status('sparse_linear')}")
    print(f"ViT-Small shape: {DEPTH} blocks, width {DIM}, {HEADS} heads, MLP {MLP}, {TOKENS} tokens, batch 1; "
          f"every Linear at {args.sparsity:.0%}; medians of {args.rounds} alternating rounds")
    for kind in args.blocks:
        torch.manual_seed(0)
        model = build(kind)
        prune(model, args.sparsity)
        x = torch.randn(1, TOKENS, DIM)
        for threads in args.threads:
            torch.set_num_threads(threads)
            print(f"\n{kind} blocks, {threads} thread{'s' if threads > 1 else ''}")
            print(f"  {'layer (block 0)':<16} {'dense ms':>9} {'torch CSR':>9} {'kernel ms':>9} {'speedup':>8} "
                  f"{'GMAC/s: dense':>14} {'CSR':>5} {'kernel':>7}")
            for name, (dense, pytorch, kernel, macs, nonzero) in per_kind(kind, model, x).items():
                times = alternate({"dense": dense, "csr": pytorch, "kernel": kernel}, args.rounds)
                d, c, k = (statistics.median(times[n]) for n in ("dense", "csr", "kernel"))
                ratio = statistics.median(a / b for a, b in zip(times["dense"], times["kernel"]))
                print(f"  {name:<16} {1000 * d:>9.3f} {1000 * c:>9.3f} {1000 * k:>9.3f} {ratio:>7.2f}x "
                      f"{macs / d / 1e9:>14.1f} {nonzero / c / 1e9:>5.1f} {nonzero / k / 1e9:>7.1f}", flush=True)
            start = time.perf_counter()
            compiled = compile_sparse(model, x, repeats=5)
            seconds = time.perf_counter() - start
            speed = compare_speed(model, compiled, x, args.rounds)
            print(f"  end to end: {speed.summary()}; compiled in {seconds:.1f} s; paths {compiled.plan.path_counts()}",
                  flush=True)


if __name__ == "__main__":
    main()
