"""A sparsified model keeps working as an ordinary nn.Module."""
import copy
import subprocess
import sys

import pytest
import torch

import adapmtl
from adapmtl.errors import SparsifyError
from tests.toy_models import ConvMultitask, LinearMultitask


def _model(seed: int = 0, **kwargs) -> ConvMultitask:
    torch.manual_seed(seed)
    return adapmtl.sparsify(ConvMultitask(), init=-3.0, **kwargs).eval()


def test_state_dict_round_trip_into_a_fresh_sparsified_model():
    source, target = _model(0), _model(1)
    with torch.no_grad():
        source.adapmtl_thresholds.scores.copy_(torch.tensor([-3.0, -2.0, -4.0]))
    target.load_state_dict(source.state_dict())
    x = torch.randn(2, 3, 8, 8)
    for task, out in source(x).items():
        assert torch.equal(target(x)[task], out)
    assert adapmtl.sparsity_report(target).thresholds == adapmtl.sparsity_report(source).thresholds


def test_loading_thresholds_of_another_grouping_is_a_clear_error():
    with pytest.raises(SparsifyError, match=r"different threshold groups.*granularity='component' and 3 groups"):
        _model(0).load_state_dict(_model(0, granularity="layer").state_dict())


def test_deepcopy_is_independent_and_shares_thresholds_within_itself():
    model = _model()
    twin = copy.deepcopy(model)
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(twin(x)["depth"], model(x)["depth"])
    with torch.no_grad():
        twin.adapmtl_thresholds.scores.fill_(-1.0)  # moves every layer of the copy, none of the original
    assert adapmtl.sparsity_report(twin).overall > adapmtl.sparsity_report(model).overall
    assert adapmtl.sparsity_report(model).thresholds["seg"] == pytest.approx(torch.sigmoid(torch.tensor(-3.0)).item())


def test_to_dtype_train_eval_and_no_grad_inference():
    model = _model()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)["seg"].double()
    model.to(torch.float64)  # .to() converts the bank with the layers (dtype here; a device on GPU)
    assert model.adapmtl_thresholds.scores.dtype == torch.float64
    with torch.no_grad():
        out = model(x.double())["seg"]
    assert out.requires_grad is False
    assert torch.allclose(out, expected, atol=1e-5)
    model.train()
    assert model.backbone[1].training and model.adapmtl_thresholds.training


def test_threshold_parameters_are_part_of_model_parameters_once():
    model = _model()
    (scores,) = adapmtl.threshold_parameters(model)
    assert sum(p is scores for p in model.parameters()) == 1
    assert scores.shape == (3,)


def test_linear_only_model_trains_and_prunes():
    torch.manual_seed(0)
    model = adapmtl.sparsify(LinearMultitask(), init=-2.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 2), torch.randn(32, 1)
    first = None
    for _ in range(50):
        loss = ((model(x)["a"] - y) ** 2).mean() + (model(x)["b"] ** 2).mean()
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first
    assert adapmtl.threshold_parameters(model)[0].grad is not None


def test_a_compiled_wrapper_is_refused_with_the_order_that_works():
    # In a subprocess: torch.compile leaves global state behind that other tests must not inherit.
    script = """
import torch, adapmtl
from adapmtl.errors import SparsifyError
model = torch.nn.Sequential(torch.nn.Linear(4, 4))
try:
    adapmtl.sparsify(torch.compile(model), granularity="global")
except SparsifyError as error:
    print(error)
print(adapmtl.sparsity_report(adapmtl.sparsify(model, granularity="global")).overall)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == [
        "sparsify the model before torch.compile, not its compiled wrapper: adapmtl.sparsify(model); "
        "compiled = torch.compile(model)",
        "0.0",  # the original is untouched and sparsifies as usual
    ], done.stderr
