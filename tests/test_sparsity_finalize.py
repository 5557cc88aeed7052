"""finalize: real zeros in ordinary layers; optionally an exact target."""
import copy
import math

import pytest
import torch
from torch import nn

import adapmtl
from adapmtl.errors import SparsifyError
from tests.toy_models import ConvMultitask


def _trained_like_model(init: float = -3.5) -> ConvMultitask:
    torch.manual_seed(0)
    model = adapmtl.sparsify(ConvMultitask(), init=init)
    with torch.no_grad():  # components learned different thresholds
        model.adapmtl_thresholds.scores.copy_(torch.tensor([-3.5, -2.5, -3.0]))
    return model.eval()


def test_finalize_keeps_outputs_exactly_and_restores_plain_layers():
    model = _trained_like_model()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    weights_before = {id(p) for n, p in model.named_parameters() if n.endswith("original")}
    report = adapmtl.finalize(model)

    assert report.shift == 0.0 and report.pruned == 0 and report.revived == 0
    assert report.after.overall == report.before.overall > 0.1
    for task, out in model(x).items():
        assert torch.equal(out, expected[task])
    assert type(model.backbone[0]) is nn.Conv2d and type(model.heads["depth"][2]) is nn.Conv2d
    assert not hasattr(model, "adapmtl_thresholds")
    assert all("parametrizations" not in k and "adapmtl" not in k for k in model.state_dict())
    # the optimizer's Parameter objects are the layers' weights again
    assert weights_before == {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert adapmtl.sparsity_report(model).overall == report.after.overall


@pytest.mark.parametrize("target", [0.5, 0.9, 0.05])
def test_finalize_to_exact_target_shifts_every_threshold_alike(target):
    model = _trained_like_model()
    scores = model.adapmtl_thresholds.scores.detach().double().clone()
    dense = {l.name: (l.dense_weight.detach().clone(), l.parametrization.group) for l in adapmtl.sparsity.sparse_layers(model)}
    report = adapmtl.finalize(model, target=target)

    assert abs(report.after.overall - target) <= 0.0005
    assert abs(report.after.zeros - round(target * report.after.numel)) <= 1
    if target > report.before.overall:
        assert report.pruned > 0 and report.revived == 0
    else:
        assert report.revived > 0 and report.pruned == 0
    # each layer is exactly the soft threshold of its dense weight at sigmoid(s_g + shift), or at the
    # collapse guard's cap (its 4th largest |w| for the 216 weights of heads.depth.0 at 90 %) where lower
    for name, (w, group) in dense.items():
        cap = w.abs().flatten().topk(math.ceil(0.01 * w.numel()) + 1).values[-1].double()
        tau = torch.minimum(torch.sigmoid(scores[group] + report.shift), cap)
        assert (name in report.guarded) == bool(cap < torch.sigmoid(scores[group] + report.shift)), name
        expected = (w.double() - torch.clamp(w.double(), -tau, tau)).float()
        assert torch.equal(model.get_submodule(name).weight, expected), name
    # the allocation is kept: components stay ordered as their learned thresholds say
    after = report.after.components
    assert after["seg"].sparsity > after["backbone"].sparsity


def test_finalizing_a_copy_leaves_the_original_working():
    model = _trained_like_model()
    x = torch.randn(1, 3, 8, 8)
    expected = model(x)["seg"]
    adapmtl.finalize(copy.deepcopy(model), target=0.5)
    assert torch.equal(model(x)["seg"], expected)
    adapmtl.finalize(model)
    assert torch.equal(model(x)["seg"], expected)


def test_finalize_errors_and_resparsify():
    with pytest.raises(SparsifyError, match="finalize needs a model prepared by adapmtl.sparsify"):
        adapmtl.finalize(ConvMultitask())
    model = _trained_like_model()
    with pytest.raises(SparsifyError, match=r"target must be a sparsity in \[0, 1\)"):
        adapmtl.finalize(model, target=1.0)
    adapmtl.finalize(model)
    adapmtl.sparsify(model)  # a finalized model is an ordinary model again
    assert adapmtl.sparsity_report(model).overall > 0.1  # its zeros stay zeros under any threshold


def test_target_out_of_reach_is_an_error():
    model = adapmtl.sparsify(nn.Linear(10, 10), granularity="global")
    with torch.no_grad():
        model.parametrizations.weight.original.fill_(2.0)  # |w| >= 1: no threshold below 1 removes it
    with pytest.raises(SparsifyError, match="could not reach target sparsity 50.0000%"):
        adapmtl.finalize(model, target=0.5)
    # Nothing changed: the layer is still sparsified and its dense weights are intact.
    assert adapmtl.sparsity_report(model).overall == 0.0
    assert torch.equal(model.parametrizations.weight.original, torch.full((10, 10), 2.0))


def test_a_target_no_whole_count_of_weights_meets_names_the_nearest():
    # 256 weights: 153/256 = 59.77 % and 154/256 = 60.16 %, both more than 0.0005 from 60 %.
    model = adapmtl.sparsify(nn.Linear(16, 16, bias=False), granularity="global")
    original = model.parametrizations.weight.original.detach().clone()
    with pytest.raises(SparsifyError, match=r"by any whole number of the model's 256 prunable weights: the nearest "
                                            r"are 153/256 = 59\.7656% and 154/256 = 60\.1562%"):
        adapmtl.finalize(model, target=0.6)
    assert torch.equal(model.parametrizations.weight.original, original)
    assert adapmtl.finalize(model, target=154 / 256).after.overall == 154 / 256


def test_finalize_restores_the_parameter_order_of_the_plain_model():
    from tests.test_sparsity_components import BareWeights
    from tests.toy_models import ConvMultitask

    cases = ((ConvMultitask, {}), (BareWeights, {"components": {"model": ["w", "out"]}, "parameters": ["w"]}),
             (lambda: torch.nn.MultiheadAttention(8, 2, kdim=4, vdim=6), {"granularity": "global"}))  # q/k/v apart
    for make, options in cases:
        plain = [name for name, _ in make().named_parameters()]
        model = adapmtl.sparsify(make(), **options)
        adapmtl.finalize(model)
        assert [name for name, _ in model.named_parameters()] == plain  # weight before bias, as built
