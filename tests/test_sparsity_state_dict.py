"""A sparsified model's state_dict holds tensors only, so safetensors, EMA and Trainer checkpoints work."""
import pytest
import torch
from safetensors.torch import load_file, save_file

import adapmtl
from adapmtl.errors import SparsifyError
from tests.toy_models import ConvMultitask


def _model(seed: int, **kwargs) -> ConvMultitask:
    torch.manual_seed(seed)
    return adapmtl.sparsify(ConvMultitask(), init=-3.0, **kwargs).eval()


def _trained(seed: int = 0) -> ConvMultitask:
    model = _model(seed, min_density=0.25)
    with torch.no_grad():
        model.adapmtl_thresholds.scores.copy_(torch.tensor([-2.5, -1.5, -3.5]))
    return model


def test_every_state_dict_entry_is_a_tensor():
    state = _trained().state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert not any(k.endswith("_extra_state") for k in state)
    assert float(state["adapmtl_thresholds.guard_min_density"]) == 0.25
    assert float(state["adapmtl_thresholds.init_score"]) == -3.0


def test_safetensors_round_trip_restores_outputs_report_and_guard(tmp_path):
    source = _trained()
    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))
    target = _model(1)  # other weights, default min_density: everything must come from the file
    target.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    x = torch.randn(2, 3, 8, 8)
    for task, out in source(x).items():
        assert torch.equal(target(x)[task], out)
    assert adapmtl.sparsity_report(target) == adapmtl.sparsity_report(source)
    assert target.adapmtl_thresholds.min_density == 0.25
    assert target.adapmtl_thresholds.init == -3.0
    # the guard's min_density came back too: finalize refreshes caps from it
    assert torch.equal(target.adapmtl_thresholds.caps, source.adapmtl_thresholds.caps)


def _legacy(state: dict, groups: list, granularity: str = "component") -> dict:
    """A state_dict as older adapmtl saved it (checkpoints/last.pt): a dict-valued _extra_state."""
    old = {k: v for k, v in state.items()
           if k.split(".")[-1] not in ("init_score", "guard_min_density", "groups_fingerprint")}
    old["adapmtl_thresholds._extra_state"] = {"groups": groups, "granularity": granularity, "init": -3.0,
                                              "min_density": 0.25}
    return old


def test_a_state_dict_saved_with_extra_state_still_loads():
    source = _trained()
    target = _model(1)
    target.load_state_dict(_legacy(source.state_dict(), ["backbone", "seg", "depth"]))
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(target(x)["seg"], source(x)["seg"])
    assert target.adapmtl_thresholds.min_density == 0.25
    assert float(target.adapmtl_thresholds.guard_min_density) == 0.25


def test_a_legacy_state_dict_of_other_groups_is_a_clear_error():
    with pytest.raises(SparsifyError, match=r"granularity='component' and 3 groups \('backbone', 'depth', 'seg'\)"):
        _model(1).load_state_dict(_legacy(_trained().state_dict(), ["backbone", "depth", "seg"]))


def test_groups_of_the_same_count_but_other_names_are_a_clear_error():
    source = adapmtl.sparsify(ConvMultitask(), {"trunk": "backbone", "seg": "heads.seg", "depth": "heads.depth"})
    with pytest.raises(SparsifyError, match="different threshold groups"):
        _model(0).load_state_dict(source.state_dict())
