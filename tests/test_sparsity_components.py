"""Which layers get thresholds, grouped how; and the errors when that is unclear."""
import pytest
import torch
from torch import nn

import adapmtl
from adapmtl.errors import ComponentError, SparsifyError
from adapmtl.sparsity import sparse_layers
from tests.toy_models import ConvMultitask, LinearMultitask

CONV_LAYERS = {"backbone.0": "backbone", "backbone.3": "backbone", "heads.seg": "seg", "heads.depth.0": "depth", "heads.depth.2": "depth"}


def _layer_components(model):
    return {l.name: l.parametrization.component for l in sparse_layers(model)}


def test_components_are_inferred_from_backbone_and_heads():
    model = adapmtl.sparsify(ConvMultitask())
    assert _layer_components(model) == CONV_LAYERS
    bank = model.adapmtl_thresholds
    assert bank.group_names == ("backbone", "seg", "depth")
    assert torch.equal(bank.scores.detach(), torch.full((3,), -20.0))
    assert type(model.backbone[1]) is nn.BatchNorm2d  # norm layers are never pruned


def test_explicit_components_with_lists_of_prefixes():
    model = adapmtl.sparsify(
        ConvMultitask(), {"trunk": ["backbone.0", "backbone.3"], "heads": "heads"}, init=-5.0
    )
    assert set(_layer_components(model).values()) == {"trunk", "heads"}
    assert _layer_components(model)["heads.depth.2"] == "heads"
    assert model.adapmtl_thresholds.group_names == ("trunk", "heads")


def test_exclude_keeps_layers_dense_and_uncounted():
    model = adapmtl.sparsify(ConvMultitask(), exclude=["heads.depth.2", "backbone.*"], init=-1.0)
    assert set(_layer_components(model)) == {"heads.seg", "heads.depth.0"}
    report = adapmtl.sparsity_report(model)
    assert report.numel == 16 * 4 + 16 * 8 * 9
    assert set(report.components) == {"seg", "depth"}  # the excluded backbone is no component
    assert isinstance(model.heads.depth[2], nn.Conv2d) and type(model.heads.depth[2]) is nn.Conv2d


def test_explicit_component_emptied_by_exclude_is_an_error():
    with pytest.raises(ComponentError, match=r"'depth' contain no prunable layer"):
        adapmtl.sparsify(ConvMultitask(), {"backbone": "backbone", "seg": "heads.seg", "depth": "heads.depth"},
                         exclude=["heads.depth"])


def test_layer_and_global_granularity_use_the_same_machinery():
    layer = adapmtl.sparsify(ConvMultitask(), granularity="layer")
    assert layer.adapmtl_thresholds.group_names == tuple(CONV_LAYERS)
    assert _layer_components(layer) == CONV_LAYERS  # components still reported
    glob = adapmtl.sparsify(ConvMultitask(), granularity="global")
    assert glob.adapmtl_thresholds.group_names == ("global",)
    report = adapmtl.sparsity_report(glob)
    assert set(report.components) == {"backbone", "seg", "depth"}
    assert report.components["seg"].threshold == report.components["depth"].threshold


def test_global_granularity_on_a_model_without_components_reports_one_component():
    model = adapmtl.sparsify(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), granularity="global")
    assert set(adapmtl.sparsity_report(model).components) == {"model"}


def test_no_backbone_is_a_clear_error():
    with pytest.raises(ComponentError, match=r"no `backbone`.*components="):
        adapmtl.sparsify(nn.Sequential(nn.Linear(4, 4)))


def test_unassigned_layers_are_listed():
    with pytest.raises(ComponentError, match=r"2 prunable layer\(s\) belong to no component: heads.depth.0, heads.depth.2"):
        adapmtl.sparsify(ConvMultitask(), {"backbone": "backbone", "seg": "heads.seg"})


def test_doubly_assigned_layers_are_listed():
    with pytest.raises(ComponentError, match=r"heads.seg \(heads and seg\)"):
        adapmtl.sparsify(ConvMultitask(), {"backbone": "backbone", "heads": "heads", "seg": "heads.seg"})


def test_prefix_matches_whole_name_parts_only():
    with pytest.raises(ComponentError, match=r"pattern 'back' matches no module.*backbone, heads"):
        adapmtl.sparsify(ConvMultitask(), {"backbone": "back", "heads": "heads"})


def test_exclude_typo_is_an_error():
    with pytest.raises(ComponentError, match=r"exclude pattern\(s\) 'heads.sge' match no prunable layer"):
        adapmtl.sparsify(ConvMultitask(), exclude=["heads.sge"])


def test_head_without_prunable_layers_is_an_error():
    model = ConvMultitask()
    model.heads["identity"] = nn.Identity()
    with pytest.raises(ComponentError, match=r"'identity' contain no prunable layer"):
        adapmtl.sparsify(model)


def test_sparsifying_twice_is_an_error():
    model = adapmtl.sparsify(LinearMultitask())
    with pytest.raises(SparsifyError, match="already sparsified"):
        adapmtl.sparsify(model)


@pytest.mark.parametrize("kwargs, message", [
    ({"granularity": "block"}, "granularity must be one of"),
    ({"init": float("nan")}, "init must be a finite number"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(SparsifyError, match=message):
        adapmtl.sparsify(LinearMultitask(), **kwargs)


def test_tied_weights_are_refused():
    model = LinearMultitask()
    model.heads["b"] = nn.Linear(3, 1)
    model.heads["b"].weight = model.heads["a"].weight
    with pytest.raises(SparsifyError, match="share one weight tensor"):
        adapmtl.sparsify(model)


def test_api_on_plain_model_needs_sparsify():
    with pytest.raises(SparsifyError, match="needs a model prepared by adapmtl.sparsify"):
        adapmtl.threshold_parameters(LinearMultitask())


def test_component_globs_match_like_exclude_globs():
    model = adapmtl.sparsify(ConvMultitask(), {"backbone": "backbone.*", "heads": ["heads.s*", "heads.depth"]})
    assert _layer_components(model) == {name: "backbone" if name.startswith("backbone") else "heads"
                                        for name in CONV_LAYERS}
    with pytest.raises(ComponentError, match="pattern 'decoder.\\*' matches no module"):
        adapmtl.sparsify(ConvMultitask(), {"backbone": "backbone", "heads": ["heads", "decoder.*"]})


class BareWeights(nn.Module):
    """A weight used through F.linear (`w` [4, 3]), its bias (1-D), and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3))
        self.b = nn.Parameter(torch.zeros(4))
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(torch.nn.functional.linear(x, self.w, self.b))


def test_a_bare_parameter_named_by_a_pattern_is_pruned_reported_and_finalized():
    model = BareWeights()
    before = adapmtl.sparsity_report(model)
    assert "w" in before.dense_params and set(before.layers) == {"out"}  # not named: left dense, and listed
    adapmtl.sparsify(model, {"model": ["w", "out"]}, parameters=["w", "out.weight"], init=0.0)  # τ 0.5; out.weight once
    report = adapmtl.sparsity_report(model)
    assert set(report.layers) == {"out", "w"} and report.numel == 12 + 8
    with torch.no_grad():
        expected = (model.w == 0).sum()  # model.w reads the thresholded Ŵ
        dense = model.parametrizations.w.original
        assert int(expected) == int((dense.abs() <= 0.5).sum()) == report.layers["w"].zeros
    adapmtl.finalize(model)
    assert type(model.w) is nn.Parameter and int((model.w == 0).sum()) == report.layers["w"].zeros
    assert set(adapmtl.sparsity_report(model, parameters=["w"]).layers) == {"out", "w"}


@pytest.mark.parametrize("patterns, message", [
    (["b"], r"'b' \(\(4,\), torch.float32\): only floating-point weights of 2 or more dimensions"),
    (["missing*"], r"match no parameter of BareWeights; its other weights of 2\+ dimensions are: w"),
])
def test_bad_parameter_patterns_are_named(patterns, message):
    with pytest.raises(ComponentError, match=message):
        adapmtl.sparsify(BareWeights(), granularity="global", parameters=patterns)


def test_a_component_pattern_naming_a_bare_parameter_says_to_list_it_in_parameters():
    with pytest.raises(ComponentError, match=r"pattern 'w' matches no module.*names the Parameter\(s\) w: prune them "
                                             r"with parameters=\[...\] \(model.parameters in a run config\)"):
        adapmtl.sparsify(BareWeights(), {"model": ["w", "out"]})
