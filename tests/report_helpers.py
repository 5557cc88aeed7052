"""Two short real runs (dense and AdapMTL at 90 %) shared by the report, sensitivity and export tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adapmtl.engine import train
from adapmtl.export import ModelSpec
from adapmtl.sparsity import prunable_layers
from tests.engine_helpers import tiny_config


_TRAINED: dict[str, Path] = {}


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """{"dense": run folder, "adapmtl": run folder}: finished tiny runs (about 2 s each), trained once
    per session even though each test module imports this fixture (and so holds its own copy of it)."""
    if _TRAINED:
        return dict(_TRAINED)
    root = tmp_path_factory.mktemp("report_runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for method in ("dense", "adapmtl"):
            train(tiny_config(root, f"method.name={method}", f"name={method}", "method.target=0.9",
                             "data.metrics=taskonomy"))  # metrics never 0 on a tiny run: ΔT is defined
    finally:
        torch.set_num_threads(threads)
    _TRAINED.update(dense=root / "dense", adapmtl=root / "adapmtl")
    return dict(_TRAINED)


def pruned_model(sparsity: float, width: float = 0.25, head_channels: int = 32, seed: int = 0):
    """(model, spec): a random model whose conv weights are magnitude-pruned to exactly `sparsity` overall."""
    torch.manual_seed(seed)
    spec = ModelSpec("deeplab_resnet34", {"segment_semantic": 40, "normal": 3, "depth_zbuffer": 1},
                     width=width, head_channels=head_channels)
    model = spec.build().eval()
    weights = [layer.weight for layer in prunable_layers(model).values()]
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    order = magnitudes.argsort(stable=True)[: round(sparsity * magnitudes.numel())]
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    keep[order] = False
    with torch.no_grad():
        start = 0
        for w in weights:
            w.mul_(keep[start:start + w.numel()].view_as(w))
            start += w.numel()
    return model, spec
