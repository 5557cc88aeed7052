"""Sparsity accounting, exact on hand-built weights."""
import json
import math

import torch

import adapmtl
from adapmtl.sparsity.sparsify import refresh_caps
from tests.toy_models import LinearMultitask


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _hand_built_model():
    model = adapmtl.sparsify(LinearMultitask())
    with torch.no_grad():
        model.backbone[0].parametrizations.weight.original.copy_(torch.tensor([[0.1, -0.5], [0.25, 0.05], [-0.3, 0.9]]))
        model.heads["a"].parametrizations.weight.original.copy_(torch.tensor([[0.1, 0.2, -0.35]]))
        model.heads["b"].parametrizations.weight.original.copy_(torch.tensor([[0.0, 0.01, 0.02], [-0.03, 0.5, 0.6]]))
        # tau: backbone 0.2, a 0.3, b 0.04
        model.adapmtl_thresholds.scores.copy_(torch.tensor([_logit(0.2), _logit(0.3), _logit(0.04)]))
    # the collapse guard's caps were taken from the random initial weights: take them from these
    # (the controller refreshes them at every measurement), else the test depends on the RNG state
    refresh_caps(model)
    return model


def test_counts_per_layer_component_and_overall_by_hand():
    report = adapmtl.sparsity_report(_hand_built_model())
    # backbone |w| <= 0.2: 0.1, 0.05 -> 2 of 6;  a |w| <= 0.3: 0.1, 0.2 -> 2 of 3;  b |w| <= 0.04: 0, .01, .02, .03 -> 4 of 6
    assert {k: (c.zeros, c.numel) for k, c in report.components.items()} == {"backbone": (2, 6), "a": (2, 3), "b": (4, 6)}
    assert report.overall == 8 / 15  # weighted by element count, not a mean of component sparsities (0.5333 vs 0.5556)
    assert math.isclose(report.components["a"].threshold, 0.3, rel_tol=1e-6)
    assert report.layers["heads.b"].group == "b" and report.layers["heads.b"].zeros == 4
    assert set(report.thresholds) == {"backbone", "a", "b"}


def test_report_counts_exactly_the_zeros_of_the_forward_weight():
    model = _hand_built_model()
    report = adapmtl.sparsity_report(model)
    for name, layer in report.layers.items():
        module = model.get_submodule(name)
        assert layer.zeros == int((module.weight == 0).sum())  # module.weight is the thresholded Ŵ


def test_plain_model_reports_exact_zeros_with_inferred_components():
    model = LinearMultitask()
    with torch.no_grad():
        model.heads["b"].weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]))
        model.heads["a"].weight.fill_(1.0)
    report = adapmtl.sparsity_report(model)
    assert report.components["b"].zeros == 4 and report.components["a"].zeros == 0
    assert report.components["b"].threshold is None


def test_report_serialises_to_json():
    data = json.loads(json.dumps(adapmtl.sparsity_report(_hand_built_model()).to_dict()))
    assert data["overall"] == 8 / 15
    assert data["components"]["b"]["sparsity"] == 4 / 6
    assert "overall" in str(adapmtl.sparsity_report(_hand_built_model()))
