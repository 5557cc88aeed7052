"""compile_sparse: every path gives the dense outputs; the choice is recorded and reloadable."""
import re

import pytest
import torch
from torch import nn

import adapmtl
from adapmtl.cli import main
from adapmtl.engine import RunDir
from adapmtl.inference import CSR, InferenceError, Plan, Shrunk, candidate_paths, compile_sparse, native
from tests.report_helpers import runs  # noqa: F401  (a session fixture)


def _prune(module: nn.Module, sparsity: float, generator: torch.Generator) -> None:
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                layer.weight.mul_(torch.rand(layer.weight.shape, generator=generator) >= sparsity)


LAYERS = {
    "1x1 with bias": lambda: nn.Conv2d(8, 6, 1),
    "3x3 stride 2": lambda: nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=False),
    "3x3 dilation 2": lambda: nn.Conv2d(8, 6, 3, padding=2, dilation=2),
    "5x3 odd kernel": lambda: nn.Conv2d(8, 6, (5, 3), padding=(2, 1)),
    "linear": lambda: nn.Linear(8, 6),
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("batch", [1, 3])
def test_every_path_matches_the_dense_layer(name, batch):
    generator = torch.Generator().manual_seed(0)
    layer = LAYERS[name]().eval()
    _prune(layer, 0.7, generator)
    with torch.no_grad():
        layer.weight[1].zero_()  # an all-zero filter
        layer.weight[:, 2].zero_()  # an input channel no filter reads
    x = torch.randn(batch, 8, 9, 11, generator=generator) if isinstance(layer, nn.Conv2d) else torch.randn(batch, 4, 8)
    paths = candidate_paths(layer)
    native_path = {"direct"} if isinstance(layer, nn.Conv2d) and native.kernels() is not None else set()
    assert set(paths) == {"dense", "shrunk", "csr"} | native_path
    with torch.no_grad():
        expected = layer(x)
        for path_name, path in paths.items():
            assert torch.allclose(path(x), expected, atol=1e-6), path_name


def test_all_zero_layer_is_its_bias():
    layer = nn.Conv2d(4, 3, 3, padding=1).eval()
    with torch.no_grad():
        layer.weight.zero_()
        x = torch.randn(2, 4, 5, 5)
        out = Shrunk(layer)(x)
        assert torch.equal(out, layer(x)) and torch.equal(out[0, :, 0, 0], layer.bias)


def test_depthwise_and_grouped_convs_get_only_the_direct_path():
    depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6)
    with torch.no_grad():
        depthwise.weight[0].zero_()
    assert set(candidate_paths(depthwise)) == {"dense"} | ({"direct"} if native.kernels() is not None else set())
    assert not CSR.applies(depthwise) and not Shrunk.applies(depthwise)


def _small_multitask(sparsity: float):
    torch.manual_seed(0)
    model = adapmtl.models.create_model("mobilenetv2", {"segment_semantic": 5, "depth_zbuffer": 1},
                                        width=0.25, head_channels=16)
    model.eval()
    _prune(model, sparsity, torch.Generator().manual_seed(1))
    with torch.no_grad():  # some BN statistics, so that folding is not the identity
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.1, 0.1)
                bn.running_var.uniform_(0.5, 1.5)
    return model


def test_compiled_model_equals_the_dense_model_and_plan_reloads(tmp_path):
    model = _small_multitask(0.9)
    x = torch.randn(2, 3, 40, 40)
    compiled = compile_sparse(model, x, repeats=1)
    with torch.no_grad():
        expected, got = model(x), compiled(x)
        other = torch.randn(1, 3, 40, 40)
        expected_other, got_other = model(other), compiled(other)
    for task in expected:
        assert torch.allclose(got[task], expected[task], atol=1e-4, rtol=1e-4)
        assert torch.allclose(got_other[task], expected_other[task], atol=1e-4, rtol=1e-4)
    plan = compiled.plan
    assert plan.fused_batchnorm
    assert not any(isinstance(m, nn.BatchNorm2d) for m in compiled.modules())
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert set(plan.layers) == set(convs)
    assert all(set(c.times_ms) >= {"dense"} and c.path in c.times_ms for c in plan.layers.values())
    assert {c.path for c in plan.layers.values()} <= {"dense", "shrunk", "csr", "direct"}

    plan.save(tmp_path / "plan.json")
    again = compile_sparse(model, x, plan=tmp_path / "plan.json")
    assert {n: c.path for n, c in again.plan.layers.items()} == {n: c.path for n, c in plan.layers.items()}
    with torch.no_grad():
        assert torch.equal(again(x)["depth_zbuffer"], got["depth_zbuffer"])


def test_bad_inputs():
    model = _small_multitask(0.5)
    with pytest.raises(InferenceError, match="needs a finalized model"):
        compile_sparse(adapmtl.sparsify(model), torch.randn(1, 3, 32, 32))
    with pytest.raises(InferenceError, match="not a compile_sparse plan"):
        Plan.load(__file__)


def test_compile_cli_times_a_finished_run_and_saves_a_reusable_plan(runs, tmp_path, capsys):
    plan_path = tmp_path / "plan.json"
    assert main(["compile", str(runs["adapmtl"]), "--rounds", "2", "--size", "32", "48", "--plan", str(plan_path),
                 "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"1 thread, batch 1: dense [\d.]+ ms, compiled [\d.]+ ms: [\d.]+x \(medians of 2 alternating "
                     r"rounds; the speedup is the median of the rounds' dense/compiled ratios", out)
    assert out.count(" ms)\n") == 3 and f"wrote {plan_path}\n" in out
    assert main(["compile", str(runs["adapmtl"]), "--rounds", "1", "--size", "32", "48", "--plan", str(plan_path)]) == 0
    assert f"wrote {plan_path} (it replaced the plan that was there)" in capsys.readouterr().out
    model, _ = RunDir(runs["adapmtl"]).load_model()
    plan = Plan.load(plan_path)
    assert plan.input_shape == [1, 3, 32, 48]
    assert plan.layers and all(choice.path in choice.times_ms for choice in plan.layers.values())
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        expected, got = model(x), compile_sparse(model, x, plan=plan)(x)
    assert all(torch.allclose(got[t], expected[t], atol=1e-4, rtol=1e-4) for t in expected)
    assert main(["compile", str(tmp_path), "--rounds", "1"]) == 2  # a folder, but not a run
    assert f"{tmp_path} is not a run folder (it has no config.yaml)" in capsys.readouterr().err
    assert main(["compile", str(tmp_path / "nowhere"), "--rounds", "1"]) == 2
    assert f"run folder {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
