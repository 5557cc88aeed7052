"""The collapse guard (issue 13.3): no prunable layer ends, or trains, all zero unless allowed."""
import warnings

import pytest
import torch

import adapmtl
from adapmtl.errors import SparsifyError
from adapmtl.methods.masks import MaskSet
from adapmtl.sparsity.guard import keep_count, max_sparsity
from tests.toy_models import DefaultInitHeads

HEAD_FIRST = ["heads.seg.0", "heads.depth.0"]  # 12,800 weights each, |w| < 0.025


def _model(**kwargs) -> DefaultInitHeads:
    torch.manual_seed(0)
    return adapmtl.sparsify(DefaultInitHeads(), **kwargs)


def _depends_on_input(model) -> bool:
    x, y = torch.randn(2, 1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    return all(not torch.equal(model(x)[t], model(y)[t]) for t in ("seg", "depth"))


def test_keep_count_and_the_highest_sparsity_it_allows():
    assert [keep_count(n, 0.01) for n in (1, 32, 100, 101, 12_800)] == [1, 1, 1, 2, 128]
    assert keep_count(12_800, 0.0) == 0 and keep_count(5, 1.0) == 5
    assert max_sparsity([100, 100], 0.05) == pytest.approx(0.95)


def test_one_global_threshold_at_80_percent_collapses_default_init_heads_without_the_guard():
    model = _model(granularity="global", min_density=0)
    with pytest.warns(UserWarning, match="heads.seg.0, heads.depth.0"):
        report = adapmtl.finalize(model, target=0.8)
    assert report.collapsed == HEAD_FIRST and report.guarded == []
    assert not _depends_on_input(model)  # why the guard exists


@pytest.mark.parametrize("granularity", ["global", "component"])
def test_the_guard_keeps_one_percent_of_every_layer_through_finalize(granularity):
    model = _model(granularity=granularity)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no collapse warning
        report = adapmtl.finalize(model, target=0.8)
    assert abs(report.after.overall - 0.8) <= 0.0005 and report.collapsed == []
    for name, layer in report.after.layers.items():
        assert layer.numel - layer.zeros >= keep_count(layer.numel, 0.01), name
    if granularity == "global":  # one threshold would have taken these whole: the guard holds them at 128
        assert report.guarded == HEAD_FIRST
        assert [report.after.layers[n].numel - report.after.layers[n].zeros for n in HEAD_FIRST] == [128, 128]
    assert _depends_on_input(model)


def test_the_controller_never_lets_a_layer_collapse_during_training():
    model = _model(granularity="global")
    controller = adapmtl.SparsityController(model, target=0.8, total_steps=30, reach_at=0.5, interval=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for step in range(1, 31):
        loss = sum(out.pow(2).mean() for out in model(x).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        report = controller.step(step)
        for name, layer in report.layers.items():  # measured after any shift of this step
            assert layer.numel - layer.zeros >= keep_count(layer.numel, 0.01), (step, name)
    assert abs(report.overall - 0.8) <= controller.tolerance
    assert controller.summary()["collapsed"] == {}


def test_without_the_guard_the_controller_records_when_a_layer_collapsed():
    model = _model(granularity="global", min_density=0)
    controller = adapmtl.SparsityController(model, target=0.8, total_steps=4, reach_at=0.5, interval=1)
    for step in range(1, 5):
        controller.step(step)
    assert controller.summary()["collapsed"] == {name: 2 for name in HEAD_FIRST}  # at the shift to 80 % (step 2)


def test_a_target_above_what_the_guard_allows_is_an_error_and_changes_nothing():
    model = _model(min_density=0.5)
    caps = model.adapmtl_thresholds.caps.clone()
    with pytest.raises(SparsifyError, match="above the 50.0000% that the collapse guard allows"):
        adapmtl.finalize(model, target=0.6)
    assert torch.equal(model.adapmtl_thresholds.caps, caps)
    with pytest.raises(SparsifyError, match="min_density must be"):
        adapmtl.sparsify(DefaultInitHeads(), min_density=1.5)


def test_mask_methods_keep_the_same_floor():
    torch.manual_seed(0)
    plain = MaskSet(DefaultInitHeads(), min_density=0)
    plain.prune_magnitude(0.8)
    assert [int(plain.masks[n].sum()) for n in HEAD_FIRST] == [0, 0]
    torch.manual_seed(0)
    guarded = MaskSet(DefaultInitHeads())
    guarded.prune_magnitude(0.8)
    assert [int(guarded.masks[n].sum()) for n in HEAD_FIRST] == [128, 128]
    assert guarded.guarded == HEAD_FIRST and guarded.zeros == plain.zeros  # the same exact count
    guarded.check(0.8)
