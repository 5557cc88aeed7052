"""compile_sparse's timing (adapmtl.inference.timing): identical layers timed once, candidates that
cannot win not run, every choice still checked, and a saved plan reloaded without timing."""
import copy
import time

import pytest
import torch
from torch import nn

from adapmtl.inference import InferenceError, ModelCheck, Plan, compile_sparse, native
from adapmtl.inference import timing
from adapmtl.inference.timing import LayerChoice, LayerTimer, signature, work


def _pruned(layer: nn.Module, sparsity: float, seed: int) -> nn.Module:
    """Exactly round(sparsity × size) zeros, at random places: equal layers get equal densities."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = layer.weight
        order = torch.randperm(weight.numel(), generator=generator)
        weight.view(-1)[order[:round(sparsity * weight.numel())]] = 0
    return layer.eval()


def _stack(count: int = 4, sparsity: float = 0.9) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[_pruned(nn.Conv2d(16, 16, 3, padding=1), sparsity, seed) for seed in range(count)]).eval()


def test_identical_layers_are_timed_once_and_each_still_checked(monkeypatch):
    races = []
    real_race = LayerTimer._race
    monkeypatch.setattr(LayerTimer, "_race", lambda self, *a: races.append(1) or real_race(self, *a))
    model = _stack()
    x = torch.randn(1, 16, 24, 24)
    compiled = compile_sparse(model, x, repeats=2)
    assert len(races) == 1  # four layers, one shape, one density: one race
    layers = compiled.plan.layers
    assert layers["0"].timed_as is None and all(layers[n].timed_as == "0" for n in "123")
    assert all(layers[n].path == layers["0"].path and layers[n].times_ms == layers["0"].times_ms for n in "123")
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-4, rtol=1e-4)
    assert "(timed as 0)" in compiled.plan.summary()


def test_another_density_shape_or_input_is_timed_again():
    base = _pruned(nn.Conv2d(16, 16, 3, padding=1), 0.9, 0)
    x = torch.randn(1, 16, 24, 24)
    key = signature(base, x)
    assert signature(_pruned(nn.Conv2d(16, 16, 3, padding=1), 0.895, 1), x) == key  # within 10 % (one bucket): shared
    assert signature(_pruned(nn.Conv2d(16, 16, 3, padding=1), 0.5, 1), x) != key
    assert signature(_pruned(nn.Conv2d(16, 16, 3, padding=2, dilation=2), 0.9, 1), x) != key
    assert signature(base, torch.randn(2, 16, 24, 24)) != key
    assert signature(_pruned(nn.Conv2d(16, 16, 3, padding=1), 1.0, 1), x) != key  # all zero: its own bucket


def test_a_reused_choice_that_fails_the_layer_check_is_timed_instead(monkeypatch):
    timer = LayerTimer(repeats=1)
    first, second = _pruned(nn.Conv2d(8, 8, 3, padding=1), 0.8, 0), _pruned(nn.Conv2d(8, 8, 3, padding=1), 0.8, 1)
    x = torch.randn(1, 8, 10, 10)
    timer.cache[signature(first, x)] = ("first", LayerChoice("csr", 0.8, {"csr": 0.01}))

    class Wrong(nn.Module):
        def forward(self, x):
            return torch.zeros(1, 8, 10, 10)

    monkeypatch.setattr(timing, "build_path", lambda layer, name: Wrong())
    choice, module = timer.choose("second", second, x)
    assert choice.timed_as is None and timer.layers_timed == 1  # raced, not reused
    with torch.no_grad():
        assert torch.allclose(module(x), second(x), atol=1e-5)


def test_a_reused_shrunk_choice_that_does_not_apply_is_timed_instead():
    timer = LayerTimer(repeats=1)
    layer = _pruned(nn.Conv2d(8, 8, 3, padding=1), 0.5, 0)  # no filter all zero: shrunk does not apply
    x = torch.randn(1, 8, 10, 10)
    timer.cache[signature(layer, x)] = ("other", LayerChoice("shrunk", 0.5, {"shrunk": 0.01}))
    choice, _ = timer.choose("layer", layer, x)
    assert choice.timed_as is None and choice.path != "shrunk"


def test_a_candidate_that_cannot_win_is_not_run():
    timer = LayerTimer(repeats=1)
    layer = _pruned(nn.Conv2d(16, 16, 3, padding=1), 0.9, 0)
    x = torch.randn(1, 16, 24, 24)
    timer.rates[("csr", False)] = 1.0  # one multiply-add per second: csr would take hours
    timer.rates[("direct", False)] = 1.0  # the direct kernel's rate swings with the shape: it is always timed
    choice, _ = timer.choose("layer", layer, x)
    assert "csr" not in choice.times_ms and "dense" in choice.times_ms
    assert "direct" in choice.times_ms or native.kernels() is None
    assert work("dense", layer, x) == 16 * 16 * 9 * 24 * 24
    assert work("csr", layer, x) == int(layer.weight.ne(0).sum()) * 24 * 24


@pytest.mark.skipif(native.kernels() is None, reason="no C compiler")
def test_a_paths_one_time_preparation_is_not_taken_for_its_speed(monkeypatch):
    # the direct path trims a dilated layer's taps on first sight of an input size; made slow here, that
    # preparation once made the race abandon direct on the paper's ASPP layers (its warm-up looked 3x slower)
    from adapmtl.inference.direct import Direct
    real_trimmed = Direct._trimmed
    monkeypatch.setattr(Direct, "_trimmed", lambda self, *a: time.sleep(0.5) or real_trimmed(self, *a))
    layer = _pruned(nn.Conv2d(64, 64, 3, padding=12, dilation=12), 0.9, 0)
    x = torch.randn(1, 64, 11, 11)  # only the centre tap reaches the image
    choice, module = LayerTimer(repeats=3).choose("layer", layer, x)
    assert choice.path == "direct" and choice.times_ms["direct"] < 100
    assert module._for_size[(11, 11)].nonzeros.kernel_size == (1, 1)


def test_a_saved_plan_reloads_without_timing_and_checks_on_the_example(tmp_path, monkeypatch):
    model = _stack(3)
    x = torch.randn(2, 16, 12, 12)
    compiled = compile_sparse(model, x, repeats=1)
    compiled.plan.save(tmp_path / "plan.json")
    monkeypatch.setattr(LayerTimer, "choose", lambda *a: pytest.fail("a reload timed a layer"))
    again = compile_sparse(model, x, plan=tmp_path / "plan.json")
    assert {n: c.path for n, c in again.plan.layers.items()} == {n: c.path for n, c in compiled.plan.layers.items()}
    assert again.plan.layers["1"].timed_as == "0"  # the record survives the file
    with torch.no_grad():
        assert torch.equal(again(x), compiled(x))
    with pytest.raises(InferenceError, match="does not match the model's layers"):
        compile_sparse(_stack(2), x, plan=tmp_path / "plan.json")


def test_a_plan_written_before_timed_as_still_loads(tmp_path):
    (tmp_path / "old.json").write_text('{"version": 1, "fused_batchnorm": false, "input_shape": [1, 3, 4, 4], '
                                       '"layers": {"0": {"path": "dense", "sparsity": 0.5, "times_ms": {}}}}')
    assert Plan.load(tmp_path / "old.json").layers["0"] == LayerChoice("dense", 0.5, {}, None)


def test_model_check_on_the_example_alone():
    model = nn.Conv2d(3, 4, 3).eval()
    x = torch.randn(1, 3, 8, 8)
    assert list(ModelCheck(model, x).inputs) == ["the example input", "a random input"]
    check = ModelCheck(model, x, random_input=False)
    assert list(check.inputs) == ["the example input"]
    check.verify(model)
    with pytest.raises(InferenceError, match="differs from the model's"):
        check.verify(lambda x: model(x) + 1)


@pytest.mark.skipif(native.kernels() is None, reason="needs the native kernel")
def test_direct_build_order_matches_the_kernels_contract():
    # the nonzeros per (block, out, tap), in that order, channels ascending within each
    from adapmtl.inference.direct import Direct
    layer = _pruned(nn.Conv2d(40, 6, 3, padding=1), 0.6, 3)
    direct = Direct(layer, block_channels=16)
    assert direct.blocks == 3 and len(direct.tap_start) == 3 * 6 * 9 + 1
    for group in range(3 * 6 * 9):
        block = group // (6 * 9)
        channels = direct.channels[direct.tap_start[group]:direct.tap_start[group + 1]].tolist()
        assert channels == sorted(channels) and all(block * 16 <= c < (block + 1) * 16 for c in channels)
    assert torch.equal(direct.dense_weight(), layer.weight.detach())


def test_a_reload_of_unchanged_weights_needs_no_dense_forward_and_a_changed_model_is_checked(tmp_path, monkeypatch):
    from adapmtl.inference import compile as compile_module
    model = _stack(3)
    x = torch.randn(1, 16, 12, 12)
    compiled = compile_sparse(model, x, repeats=1)
    record = compiled.plan.fingerprint
    assert set(record) == {"weights", "outputs", "threads"} and record["threads"] == torch.get_num_threads()
    compiled.plan.save(tmp_path / "plan.json")
    checks = []
    real_check = compile_module.ModelCheck
    monkeypatch.setattr(compile_module, "ModelCheck", lambda *a, **k: checks.append(1) or real_check(*a, **k))
    again = compile_sparse(model, x, plan=tmp_path / "plan.json")
    assert checks == []  # same weights, same threads, the same outputs bit for bit: no dense forward
    with torch.no_grad():
        assert torch.equal(again(x), compiled(x))
        model[1].weight.mul_(2)  # other weights: the plan still fits, but is checked against the model
        changed = compile_sparse(model, x, plan=tmp_path / "plan.json")
        assert checks == [1] and torch.allclose(changed(x), model(x), atol=1e-4, rtol=1e-4)
        model[1].weight.div_(2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)  # another thread count: checked
        compile_sparse(model, x, plan=tmp_path / "plan.json")
        assert checks == [1, 1]
    finally:
        torch.set_num_threads(threads)


def test_a_reload_checks_an_example_that_is_not_the_plans(tmp_path):
    # the fast reload runs only its own random input: an example of another shape or dtype must still be
    # checked (and refused where the model cannot take it), never accepted unseen
    model = _stack(2)
    x = torch.randn(1, 16, 12, 12)
    compile_sparse(model, x, repeats=1).plan.save(tmp_path / "plan.json")
    with pytest.raises(InferenceError):
        compile_sparse(model, torch.randn(1, 4, 12, 12), plan=tmp_path / "plan.json")  # 4 channels, not 16
    with pytest.raises(InferenceError):
        compile_sparse(model, torch.zeros(1, 16, 12, 12, dtype=torch.int64), plan=tmp_path / "plan.json")
    other = torch.randn(2, 16, 9, 15)  # another shape is fine, and checked on that input
    assert torch.allclose(compile_sparse(model, other, plan=tmp_path / "plan.json")(other), model(other), atol=1e-5)


def test_the_compiled_model_is_inference_only_and_its_csr_weights_load_with_the_state_dict():
    from adapmtl.inference.paths import CSR
    model = _stack(2)
    x = torch.randn(1, 16, 12, 12, requires_grad=True)
    compiled = compile_sparse(model, x.detach(), repeats=1)
    assert not compiled(x).requires_grad  # no output claims a gradient the kernels do not give
    # a CSR layer's weights are buffers: a state_dict loaded into it is used, not silently ignored
    layer = _pruned(nn.Conv2d(16, 16, 3, padding=1), 0.9, 5)
    other = _pruned(nn.Conv2d(16, 16, 3, padding=1), 0.9, 5)
    with torch.no_grad():
        other.weight.mul_(2)
        other.bias.mul_(2)
    csr, twice = CSR(layer), CSR(other)
    csr.load_state_dict(twice.state_dict())
    with torch.no_grad():
        assert torch.allclose(csr(x.detach()), other(x.detach()), atol=1e-5)
        assert torch.allclose(copy.deepcopy(csr).double()(x.detach().double()), other.double()(x.detach().double()),
                              atol=1e-10)


def test_an_empty_batch_gives_an_empty_output_on_every_path():
    from adapmtl.inference.paths import PATHS
    layer = _pruned(nn.Conv2d(16, 8, 3, padding=1), 0.9, 3)
    x = torch.randn(0, 16, 12, 12)
    for name, path in PATHS.items():
        if path.applies(layer):
            with torch.no_grad():
                assert path(layer)(x).shape == (0, 8, 12, 12), name


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_a_conv_with_padding_given_as_a_word_compiles(padding):
    # an all-zero filter offers "shrunk", which computes the output size from numeric padding
    torch.manual_seed(0)
    model = nn.Sequential(_pruned(nn.Conv2d(8, 8, 3, padding=padding), 0.9, 1), nn.ReLU()).eval()
    with torch.no_grad():
        model[0].weight[2].zero_()
    x = torch.randn(1, 8, 10, 10)
    compiled = compile_sparse(model, x, repeats=1)
    assert compiled.plan.layers["0"].path in ("dense", "csr", "direct")
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)
