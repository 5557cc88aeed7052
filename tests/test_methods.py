"""Every pruning method on a tiny real run; the masking utility; DiSparse's rule; LTH's rewind."""
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import adapmtl
from adapmtl.engine import resume, train
from adapmtl.engine.checkpoint import load_checkpoint
from adapmtl.methods import METHODS, GMP, IMP, MaskSet, MethodError, create_method
from adapmtl.methods.importance import task_rank_keys
from tests.engine_helpers import tiny_config

SPARSE = sorted(m for m, cls in METHODS.items() if cls.sparse)
FAST = {"importance_batches": 2, "update_every": 2}


def fast(method: str) -> list[str]:
    """Overrides that shorten `method`'s scoring and update intervals, for the options it has."""
    accepted = METHODS[method].options_type.model_fields
    return [f"method.{k}={v}" for k, v in FAST.items() if k in accepted]


def _tiny_model():
    return adapmtl.models.create_model("deeplab_resnet34", {"segment_semantic": 8, "normal": 3, "depth_zbuffer": 1},
                                       width=0.125, head_channels=8)


@pytest.mark.parametrize("method", SPARSE)
def test_every_method_ends_at_the_exact_target(tmp_path, method):
    result = train(tiny_config(tmp_path, f"name={method}", f"method.name={method}", "method.target=0.7", *fast(method)))
    assert result["method"] == method
    assert abs(result["sparsity"]["overall"] - 0.7) <= 0.0005
    assert result["train_iterations"] == 12
    model = _tiny_model()
    model.load_state_dict(load_file(str(tmp_path / method / "model.safetensors")))
    report = adapmtl.sparsity_report(model)  # exact zeros of ordinary weights, components inferred
    assert abs(report.overall - 0.7) <= 0.0005
    assert set(report.components) == {"backbone", "segment_semantic", "normal", "depth_zbuffer"}


def test_budgets_say_how_many_steps_trained_dense(tmp_path):
    lth = train(tiny_config(tmp_path, "name=lth", "method.name=lth", "method.pretrain=0.5"))
    imp = train(tiny_config(tmp_path, "name=imp", "method.name=imp", "method.prune_start=0.25"))
    assert (lth["dense_iterations"], lth["train_iterations"]) == (6, 12)
    assert (imp["dense_iterations"], imp["train_iterations"]) == (3, 12)
    assert lth["selected_step"] > 6 and imp["selected_step"] > 8  # only with the final mask


def _masks(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["method"]["masks"]


@pytest.mark.parametrize("method, fixed_from", [("snip", 1), ("lth", 6)])
def test_masks_stay_fixed_where_the_method_says_so(tmp_path, method, fixed_from):
    config = tiny_config(tmp_path, "name=m", f"method.name={method}", *fast(method))
    train(config, stop_at=fixed_from)
    early = _masks(tmp_path / "m")
    resume(tmp_path / "m")
    late = _masks(tmp_path / "m")
    assert all(torch.equal(early[k], late[k]) for k in early)
    assert sum(int((~m).sum()) for m in late.values()) / sum(m.numel() for m in late.values()) == pytest.approx(0.8, abs=5e-4)


def test_lth_rewinds_the_surviving_weights_to_the_stored_initial_ones(tmp_path):
    train(tiny_config(tmp_path, "name=l", "method.name=lth"), stop_at=5)  # dense phase: steps 1-6
    initial = load_checkpoint(tmp_path / "l" / "checkpoints" / "last.pt")["method"]["rewind"]
    resume(tmp_path / "l", stop_at=6)  # step 6: prune, rewind
    after = load_checkpoint(tmp_path / "l" / "checkpoints" / "last.pt")
    masks, model = after["method"]["masks"], after["model"]
    assert after["method"]["rewind"] is None
    changed = [k for k in initial if not torch.equal(model[k], initial[k] * masks[k[:-7]] if k[:-7] in masks
                                                     and k.endswith(".weight") else initial[k])]
    assert changed == []
    assert after["optimizer"]["state"] == {}  # Adam's moments forgotten at the rewind


def test_lth_late_rewinding_stores_the_weights_of_that_step(tmp_path):
    train(tiny_config(tmp_path, "name=l", "method.name=lth", "method.rewind_step=2"), stop_at=2)
    checkpoint = load_checkpoint(tmp_path / "l" / "checkpoints" / "last.pt")
    assert all(torch.equal(checkpoint["method"]["rewind"][k], v) for k, v in checkpoint["model"].items())


def test_keep_top_selects_exactly_k_with_ties_broken_by_position():
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False))
    masks = MaskSet(model, min_density=0)  # no collapse guard: layer "1" may lose every weight
    with torch.no_grad():
        for m in model:
            m.weight.fill_(1.0)  # every score ties
    masks.keep_top({n: w.abs() for n, w in masks.weights().items()}, 5)
    assert [int(m.sum()) for m in masks.masks.values()] == [5, 0]
    assert masks.masks["0"].flatten().tolist() == [True] * 5 + [False] * 7 and masks.guarded == []
    assert int((model[0].weight == 0).sum()) == 7 and int((model[1].weight == 0).sum()) == 6
    with pytest.raises(MethodError, match="cannot keep 19"):
        masks.keep_top({n: w.abs() for n, w in masks.weights().items()}, 19)
    guarded = MaskSet(model)  # the default guard keeps one weight of each layer, the first by position
    guarded.keep_top({n: w.abs() for n, w in guarded.weights().items()}, 5)
    assert [int(m.sum()) for m in guarded.masks.values()] == [4, 1] and guarded.guarded == ["1"]
    assert guarded.masks["1"].flatten().tolist() == [True] + [False] * 5
    with pytest.raises(MethodError, match="collapse guard keeps 2"):
        guarded.keep_top({n: w.abs() for n, w in guarded.weights().items()}, 1)


def test_pruned_weights_get_no_gradient_unless_asked():
    model = nn.Sequential(nn.Linear(3, 2, bias=False))
    masks = MaskSet(model)
    masks.keep_top({"0": torch.tensor([[3.0, 2.0, 1.0], [6.0, 5.0, 4.0]])}, 3)
    model(torch.ones(1, 3)).sum().backward()
    assert model[0].weight.grad.tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    model[0].weight.grad = None
    with masks.raw_gradients():
        model(torch.ones(1, 3)).sum().backward()
    assert model[0].weight.grad.tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]


def test_disparse_keeps_a_backbone_weight_that_any_task_needs():
    # backbone: 4 weights; heads a and b: 2 weights each. Each task ranks backbone + its own head.
    component_of = {"backbone.0": "backbone", "heads.a.0": "a", "heads.b.0": "b"}
    scores = {
        "a": {"backbone.0": torch.tensor([9.0, 0.1, 0.2, 0.3]), "heads.a.0": torch.tensor([8.0, 0.05]),
              "heads.b.0": torch.zeros(2)},
        "b": {"backbone.0": torch.tensor([0.1, 9.0, 0.2, 0.3]), "heads.a.0": torch.zeros(2),
              "heads.b.0": torch.tensor([8.0, 0.05])},
    }
    keys = task_rank_keys(scores, component_of)
    # each task keeps its top 2 of 6: task a keeps backbone[0] and head a[0]; task b keeps backbone[1] and head b[0]
    kept = {n: (k < 2 / 6) for n, k in keys.items()}
    assert kept["backbone.0"].tolist() == [True, True, False, False]  # kept: one task needs each
    assert kept["heads.a.0"].tolist() == [True, False] and kept["heads.b.0"].tolist() == [True, False]
    # weights 2 and 3 of the backbone: every task ranks them low, so they are pruned first
    model = nn.Module()
    model.backbone = nn.Sequential(nn.Linear(4, 1, bias=False))
    model.heads = nn.ModuleDict({"a": nn.Sequential(nn.Linear(2, 1, bias=False)),
                                 "b": nn.Sequential(nn.Linear(2, 1, bias=False))})
    masks = MaskSet(model)
    masks.keep_top({n: -k.view_as(masks.masks[n]) for n, k in keys.items()}, 4)
    assert masks.masks["backbone.0"].flatten().tolist() == [True, True, False, False]


def test_disparse_dynamic_moves_weights_but_keeps_the_exact_count(tmp_path):
    config = tiny_config(tmp_path, "name=d", "method.name=disparse_dynamic", *fast("disparse_dynamic"))
    train(config, stop_at=1)
    start = _masks(tmp_path / "d")
    result = resume(tmp_path / "d")
    end = _masks(tmp_path / "d")
    assert any(not torch.equal(start[k], end[k]) for k in start)
    assert abs(result["sparsity"]["overall"] - 0.8) <= 0.0005


def test_gmp_cubic_schedule_and_imp_rounds():
    gmp = create_method({"name": "gmp", "target": 0.9, "prune_start": 0.25, "reach_at": 0.75}, 100)
    assert isinstance(gmp, GMP)
    gmp.prepare(_tiny_model())
    assert (gmp.first, gmp.final_step) == (25, 75)
    assert [gmp.sparsity_at(s) for s in (25, 50, 75, 90)] == pytest.approx([0.0, 0.9 * (1 - 0.125), 0.9, 0.9])
    imp = create_method({"name": "imp", "target": 0.875, "rounds": 3, "prune_start": 0.2, "reach_at": 0.6}, 100)
    assert isinstance(imp, IMP)
    imp.prepare(_tiny_model())
    assert imp.schedule == pytest.approx({20: 0.5, 40: 0.75, 60: 0.875})


def test_bad_method_settings_are_errors():
    with pytest.raises(MethodError, match="unknown method 'magic'"):
        create_method({"name": "magic"}, 100)
    lth = create_method({"name": "lth", "pretrain": 0.5, "rewind_step": 60}, 100)
    with pytest.raises(MethodError, match="rewind step"):
        lth.prepare(_tiny_model())
    plain = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(MethodError, match="backbone"):
        create_method({"name": "disparse_static"}, 100).prepare(plain)
