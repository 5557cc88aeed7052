"""Choosing one layer's path by timing, at a cost of seconds for a whole model.

`LayerTimer.choose` times a layer's candidate paths (`adapmtl.inference.paths`) on its real
input and returns the fastest that reproduces the dense output. Three things keep that cheap
(issue 17: timing every path of every layer took 169 s on Deeplab-ResNet34):

- **once per distinct layer**: layers with the same kind, weight shape, stride, padding, dilation,
  groups, bias, input shape, thread count and density (within 10 %, `DENSITY_STEP`) share one
  timing (ResNet blocks and the heads' ASPP branches repeat); a layer that reuses another's
  choice still has that path's output checked against its own dense output, and falls back to
  being timed itself if it differs.
- **a cost model**: each path's best rate seen so far (multiply-adds per second, `work`) gives an
  optimistic time for the next layer; a candidate that even so would take over `SKIP_FACTOR` times
  the best time measured on the layer is not run at all. Only for the paths in `ESTIMATED`, whose
  rate does not swing with the layer's shape: the direct kernel's runs from 5 G/s (depthwise) to
  30 G/s and skips padding taps that `work` counts, so an estimate from its slow layers once kept it
  from being timed on MobileNetV2's ASPP layers at 70 %, where it is 2-30x faster than dense.
- **close calls only**: a candidate whose first call (the warm-up) or any timed call is over
  `ABANDON_FACTOR` times the best median so far stops there; only the close ones get all repeats.

The chosen path's output on the layer's input must be within rtol/atol of the dense output
(torch.allclose); the whole-model check (`ModelCheck`) still follows in `compile_sparse`.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from adapmtl.inference.geometry import conv_output_size
from adapmtl.inference.paths import PATHS, build_path

SKIP_FACTOR = 2.0  # estimated at this many times the best measured: not run
ABANDON_FACTOR = 1.5  # measured (warm-up or a timed call) at this many times the best: not timed further
DENSITY_STEP = 1.1  # densities within a factor of 1.1 share a timing
ORDER = ("direct", "shrunk", "csr")  # likely fastest first, so that the others meet a low bar
ESTIMATED = ("csr",)  # paths the cost model may skip (see the module doc)


@dataclass
class LayerChoice:
    """The path chosen for one layer, the times measured (ms) and the layer's sparsity.
    `timed_as`: the layer whose timing this one reused (same shapes and density), None if timed itself.
    Paths missing from `times_ms` were skipped by the cost model."""

    path: str
    sparsity: float
    times_ms: dict[str, float] = field(default_factory=dict)
    timed_as: str | None = None


def elapsed_seconds(run: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call of `run`."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def work(path: str, layer: nn.Module, x: torch.Tensor) -> float:
    """Multiply-adds of `layer` on `x` by `path`: all of the weight's for "dense", the nonzeros'
    for the others (a lower bound for "shrunk", an upper bound where "direct" skips padding)."""
    weight = layer.weight
    count = weight.numel() if path == "dense" else int(torch.count_nonzero(weight))
    if isinstance(layer, nn.Conv2d):
        height, width = conv_output_size(layer, *x.shape[2:])
        return float(count) * x.shape[0] * max(height, 0) * max(width, 0)
    return float(count) * (x.numel() // max(x.shape[-1], 1))


def signature(layer: nn.Module, x: torch.Tensor) -> tuple:
    """What a layer's timing depends on: layers with equal signatures share one (see the module doc)."""
    weight = layer.weight
    density = int(torch.count_nonzero(weight)) / max(weight.numel(), 1)
    bucket = round(math.log(density) / math.log(DENSITY_STEP)) if density > 0 else None
    common = (tuple(weight.shape), weight.dtype, layer.bias is not None, tuple(x.shape), x.dtype,
              torch.get_num_threads(), bucket)
    if isinstance(layer, nn.Conv2d):
        return ("conv", layer.stride, layer.padding, layer.dilation, layer.groups, layer.padding_mode, *common)
    return (type(layer).__name__, *common)


def _rate_key(path: str, layer: nn.Module) -> tuple[str, bool]:
    """Rates are kept apart for pointwise layers (no im2col for "csr") and the rest."""
    return path, not isinstance(layer, nn.Conv2d) or layer.kernel_size == (1, 1)


class LayerTimer:
    """Chooses paths layer after layer, remembering timings by `signature` and rates by path.

    `repeats`: timed calls of a close candidate (after its warm-up); rtol/atol: the per-layer
    check. `layers_timed` and `calls` count the layers raced and the timed calls made."""

    def __init__(self, repeats: int = 5, rtol: float = 1e-4, atol: float = 1e-5) -> None:
        self.repeats, self.rtol, self.atol = max(1, repeats), rtol, atol
        self.cache: dict[tuple, tuple[str, LayerChoice]] = {}
        self.rates: dict[tuple[str, bool], float] = {}
        self.layers_timed = 0
        self.calls = 0

    def _matches(self, got: torch.Tensor, reference: torch.Tensor) -> bool:
        """torch.allclose(got, reference, rtol, atol), about twice as fast where it holds (the layers'
        outputs are megabytes); where it does not, torch.allclose decides (equal infinities)."""
        if got.shape != reference.shape:
            return False
        bound = reference.abs().mul_(self.rtol).add_(self.atol)
        if bool((got - reference).abs_().le_(bound).all()):
            return True
        return torch.allclose(got, reference, rtol=self.rtol, atol=self.atol)

    def _median(self, run: Callable[[], Any], best: float) -> float:
        """Median seconds of up to `repeats` calls, stopping once the fastest is over ABANDON_FACTOR × best."""
        samples = []
        for _ in range(self.repeats):
            samples.append(elapsed_seconds(run))
            self.calls += 1
            if min(samples) > ABANDON_FACTOR * best:
                break
        return statistics.median(samples)

    @torch.no_grad()
    def choose(self, name: str, layer: nn.Module, x: torch.Tensor) -> tuple[LayerChoice, nn.Module]:
        """(the choice, the module that runs it) for `layer` (Conv2d or Linear, eval mode) on its input `x`."""
        sparsity = float(layer.weight.eq(0).float().mean())
        reference = layer(x)  # also the dense path's warm-up
        key = signature(layer, x)
        if key in self.cache:
            first, choice = self.cache[key]
            try:  # "shrunk" needs zeros that line up, which the signature does not say
                module = build_path(layer, choice.path)
            except ValueError:
                module = None
            if module is not None and (choice.path == "dense" or self._matches(module(x), reference)):
                return LayerChoice(choice.path, sparsity, dict(choice.times_ms), first), module
        choice, module = self._race(layer, x, reference, sparsity)
        self.cache.setdefault(key, (name, choice))
        return choice, module

    def _race(self, layer: nn.Module, x: torch.Tensor, reference: torch.Tensor,
              sparsity: float) -> tuple[LayerChoice, nn.Module]:
        self.layers_timed += 1
        seconds = {"dense": self._median(lambda: layer(x), math.inf)}
        modules: dict[str, nn.Module] = {"dense": layer}
        for path in ORDER:
            kind = PATHS[path]
            if not (kind.applies(layer) and kind.worth_timing(layer)):
                continue
            best = min(seconds[p] for p in modules)
            rate = self.rates.get(_rate_key(path, layer))
            if path in ESTIMATED and rate and work(path, layer, x) / rate > SKIP_FACTOR * best:
                continue  # even at its best rate so far it would lose by far
            module = kind(layer)
            if hasattr(module, "prepare"):  # one-time work per input size (Direct): not the path's speed
                module.prepare(x)
            start = time.perf_counter()
            got = module(x)  # the warm-up: first calls allocate
            warm_up = time.perf_counter() - start
            if warm_up > ABANDON_FACTOR * best * 2:  # first calls are slower, hence the extra 2x
                seconds[path] = warm_up
                continue
            if not self._matches(got, reference):
                continue  # never trade correctness for speed
            seconds[path] = self._median(lambda: module(x), best)
            modules[path] = module
            self._learn(path, layer, x, seconds[path])
        chosen = min(modules, key=seconds.get)
        times = {p: 1000 * s for p, s in seconds.items()}
        return LayerChoice(chosen, sparsity, times), modules[chosen]

    def _learn(self, path: str, layer: nn.Module, x: torch.Tensor, seconds: float) -> None:
        key = _rate_key(path, layer)
        rate = work(path, layer, x) / max(seconds, 1e-9)
        self.rates[key] = max(self.rates.get(key, 0.0), rate)
