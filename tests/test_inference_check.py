"""compile_sparse never returns a model that differs from the original: BN folding only where
it is safe, and the whole-model check on every result (issue 12, A1)."""
import json
import warnings
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.optimization import fuse

from adapmtl.inference import CSR, InferenceError, LayerChoice, ModelCheck, Plan, compile_sparse
from adapmtl.inference import fold


def _conv_bn(model: nn.Module) -> nn.Module:
    """`model` in eval mode with sparse conv weights and BN statistics far from the identity."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(torch.rand(module.weight.shape, generator=generator) >= 0.6)
                module.weight[0].zero_()  # an all-zero filter: "shrunk" applies
            if isinstance(module, nn.BatchNorm2d):
                if module.track_running_stats:
                    module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                    module.running_var.uniform_(0.3, 2.0, generator=generator)
                module.weight.uniform_(0.5, 2.0, generator=generator)
                module.bias.uniform_(-0.5, 0.5, generator=generator)
    return model.eval()


class Graph(nn.Module):
    """conv1 → bn1 and a second use of conv1 or its output, chosen by `case`, plus conv2 → bn2."""

    def __init__(self, case: str) -> None:
        super().__init__()
        self.case = case
        # without running statistics a BN normalizes by the batch's, in eval mode too: nothing to fold
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=case != "batch BN")
        self.conv2, self.bn2 = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
        self.alias = self.conv1  # the same module under a second name

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.conv1(x)
        first = self.bn1(y)
        if self.case == "conv called twice":  # the issue's example
            first = first + self.conv1(x.flip(-1))
        elif self.case == "conv called through an alias":
            first = first + self.alias(x.flip(-1))
        elif self.case == "conv output used twice":
            first = first + y
        elif self.case == "weight read by a function":
            first = first + F.conv2d(x, self.conv1.weight, padding=1)
        second = self.bn1(self.conv2(x)) if self.case == "shared BN" else self.bn2(self.conv2(x))
        return {"first": first, "second": second}


# case → the BatchNorm modules left after folding (bn2 after conv2 is always foldable)
CASES = {
    "conv called twice": {"bn1"},
    "conv called through an alias": {"bn1"},
    "conv output used twice": {"bn1"},
    "weight read by a function": {"bn1"},
    "shared BN": {"bn1"},
    "batch BN": {"bn1"},
    "nothing shared": set(),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bn_is_folded_only_where_the_conv_and_bn_are_used_once(case):
    model = _conv_bn(Graph(case))
    x = torch.randn(2, 3, 8, 9)
    compiled = compile_sparse(model, x, repeats=1)
    assert compiled.plan.fused_batchnorm
    assert {name for name, m in compiled.named_modules() if isinstance(m, nn.BatchNorm2d)} == \
        {f"module.{name}" for name in CASES[case]}
    other = torch.randn(1, 3, 11, 7)  # another batch and size than the compiled example
    # the timed choice may well be dense on layers this small: a plan with every layer on "csr" runs the sparse path
    forced = Plan({name: LayerChoice("csr", choice.sparsity) for name, choice in compiled.plan.layers.items()},
                  True, list(x.shape))
    if case == "weight read by a function":  # replacing conv1 would break F.conv2d(x, conv1.weight): kept dense
        assert compiled.plan.layers["conv1"].path == "dense" and not compiled.plan.layers["conv1"].times_ms
        with pytest.raises(InferenceError, match="the compiled model fails on the example input where the model runs"):
            compile_sparse(model, x, plan=forced)
        forced.layers["conv1"].path = "dense"
    for candidate in (compiled, compile_sparse(model, x, plan=forced)):
        with torch.no_grad():
            for inputs in (x, other):
                expected, got = model(inputs), candidate(inputs)
                for key in expected:
                    assert torch.allclose(got[key], expected[key], atol=1e-5, rtol=1e-4), (key, got[key] - expected[key])


def test_the_issue_example_is_wrong_with_torch_fuse():
    # the model above really is the trap of issue 12: fx's fuse folds bn1 into both calls of conv1
    model = _conv_bn(Graph("conv called twice"))
    x = torch.randn(1, 3, 8, 9)
    with torch.no_grad():
        assert (fuse(model)(x)["first"] - model(x)["first"]).abs().max() > 0.05


def test_train_mode_model_is_compiled_in_eval_mode_and_left_as_it_was():
    model = _conv_bn(Graph("nothing shared")).train()
    x = torch.randn(2, 3, 8, 9)
    stats = model.bn1.running_mean.clone()
    compiled = compile_sparse(model, x, repeats=1)
    assert model.training and torch.equal(model.bn1.running_mean, stats)
    with torch.no_grad():
        expected, got = model.eval()(x), compiled(x)
    assert all(torch.allclose(got[k], expected[k], atol=1e-5, rtol=1e-4) for k in expected)


def test_a_wrong_path_under_a_reused_plan_is_an_error(tmp_path, monkeypatch):
    model = _conv_bn(Graph("nothing shared"))
    x = torch.randn(1, 3, 8, 9)
    plan = compile_sparse(model, x, repeats=1).plan
    plan.layers["conv2"].path = "csr"
    plan.save(tmp_path / "plan.json")
    again = compile_sparse(model, x, plan=tmp_path / "plan.json")  # the reused plan gives the same outputs
    with torch.no_grad():
        assert torch.allclose(again(x)["second"], model(x)["second"], atol=1e-5, rtol=1e-4)

    original = CSR.forward
    monkeypatch.setattr(CSR, "forward", lambda self, inputs: original(self, inputs) + 0.25)
    with pytest.raises(InferenceError, match=r"on the example input: output\['second'\] differs from the model's by "
                                             r"up to 0\.25 \(tolerance"):
        compile_sparse(model, x, plan=tmp_path / "plan.json")


def test_a_plan_that_no_longer_fits_the_model(tmp_path):
    model = _conv_bn(Graph("nothing shared"))
    x = torch.randn(1, 3, 8, 9)
    compile_sparse(model, x, repeats=1).plan.save(tmp_path / "plan.json")
    data = json.loads((tmp_path / "plan.json").read_text())
    with torch.no_grad():
        model.conv1.weight.add_(1.0)  # retrained: no zeros left, "shrunk" does not apply any more
    data["layers"]["conv1"]["path"] = "shrunk"
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(InferenceError, match=r"the plan does not fit layer 'conv1': path 'shrunk' does not apply"):
        compile_sparse(model, x, plan=tmp_path / "plan.json")
    data["layers"]["conv1"]["path"] = "nonsense"
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(InferenceError, match=r"the plan does not fit layer 'conv1': path 'nonsense' does not apply"):
        compile_sparse(model, x, plan=tmp_path / "plan.json")
    (tmp_path / "plan.json").write_text(json.dumps({**data, "version": 2}))
    with pytest.raises(InferenceError, match=r"plan.json: plan version 2, this adapmtl reads version 1"):
        compile_sparse(model, x, plan=tmp_path / "plan.json")
    data["layers"]["conv3"] = data["layers"].pop("conv1")
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(InferenceError, match=r"1 of the model's layers are not in the plan \['conv1'\], "
                                             r"1 of the plan's are not in the model \['conv3'\]"):
        compile_sparse(model, x, plan=Plan.load(tmp_path / "plan.json"))
    with pytest.raises(InferenceError, match="expected a Plan or the path of its JSON file, got dict"):
        compile_sparse(model, x, plan=data)
    with pytest.raises(InferenceError, match="not the JSON text itself"):
        compile_sparse(model, x, plan=json.dumps(data))


def test_a_plan_made_for_other_weights_warns_and_records_the_current_sparsity():
    model = _conv_bn(Graph("nothing shared"))
    x = torch.randn(1, 3, 8, 9)
    with torch.no_grad():
        model.conv2.weight.mul_(torch.rand(model.conv2.weight.shape) > 0.9)  # about 90 % zeros
    plan = compile_sparse(model, x, repeats=1).plan
    assert plan.layers["conv2"].sparsity > 0.8
    # "csr" applies to any weights; the timed pick could be "shrunk", which the dense weights below would not fit
    plan = replace(plan, layers={**plan.layers, "conv2": replace(plan.layers["conv2"], path="csr")})
    assert plan.layers["conv2"].times_ms  # still a timed choice: made for these weights
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same weights: no warning
        compile_sparse(model, x, plan=plan)
    dense = _conv_bn(Graph("nothing shared"))
    with torch.no_grad():
        dense.conv2.weight.normal_()  # no zeros: the plan's choice for conv2 was made for the pruned weights
    with pytest.warns(RuntimeWarning, match=r"the plan was made for other weights: 1 layer\(s\) changed sparsity "
                                            r"since \(conv2 \d+\.\d% → 0\.0%\)") as caught:
        compiled = compile_sparse(dense, x, plan=plan)
    assert caught[0].filename == __file__  # the caller's line, past compile_sparse's torch.no_grad wrapper
    assert compiled.plan.layers["conv2"].sparsity == 0.0
    handmade = Plan({name: LayerChoice(choice.path, 0.0) for name, choice in plan.layers.items()}, True, list(x.shape))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # hand-written choices (no times) were made for no weights in particular
        compile_sparse(model, x, plan=handmade)
    with torch.no_grad():
        expected, got = dense.eval()(x), compiled(x)
    assert all(torch.allclose(got[k], expected[k], atol=1e-5) for k in expected)


def test_a_fold_that_changes_the_outputs_is_not_used(monkeypatch):
    # a broken fold (the BN dropped) must be caught by the check: the model compiles unfolded, correct
    monkeypatch.setattr(fold, "fuse_conv_bn_eval", lambda conv, bn: conv)
    model = _conv_bn(Graph("nothing shared"))
    x = torch.randn(1, 3, 8, 9)
    with pytest.warns(RuntimeWarning, match=r"the model with BatchNorm folded on the example input: output\['first'\]"):
        compiled = compile_sparse(model, x, repeats=1)
    assert not compiled.plan.fused_batchnorm
    with torch.no_grad():
        assert torch.allclose(compiled(x)["first"], model(x)["first"], atol=1e-5, rtol=1e-4)


class DataDependent(nn.Module):
    """Control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.bn(self.conv(x))
        return (y, -y) if x.sum() > 0 else (-y, y)


def test_a_model_fx_cannot_trace_compiles_without_folding():
    model = _conv_bn(DataDependent())
    x = torch.randn(1, 3, 6, 6)
    compiled = compile_sparse(model, x, repeats=1)
    assert not compiled.plan.fused_batchnorm and isinstance(compiled.module.bn, nn.BatchNorm2d)
    with torch.no_grad():
        for inputs in (x, -x):
            assert all(torch.allclose(g, e, atol=1e-5, rtol=1e-4) for g, e in zip(compiled(inputs), model(inputs)))


def test_bad_example_inputs():
    model = _conv_bn(Graph("nothing shared"))
    with pytest.raises(InferenceError, match="example_input must be a floating-point tensor .* got torch.int64"):
        compile_sparse(model, torch.zeros(1, 3, 8, 8, dtype=torch.int64))
    with pytest.raises(InferenceError, match=r"the model fails on the example input of shape \[1, 5, 8, 8\]"):
        compile_sparse(model, torch.randn(1, 5, 8, 8))


class Pair(nn.Module):
    """(linear(x), 100 × linear(x)); `change(index, output)` may alter one output."""

    def __init__(self, change=lambda index, output: output) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear, self.change = nn.Linear(4, 6), change

    def forward(self, x):
        return tuple(self.change(i, out) for i, out in enumerate((self.linear(x), 100 * self.linear(x))))


def _shift(index: int, fraction: float):
    """Add `fraction` of the documented tolerance, atol + 1e-3 × max |output| (float32), to output `index`."""
    return lambda i, out: out + fraction * (1e-5 + 1e-3 * float(out.abs().max())) if i == index else out


def test_the_check_tolerance_scales_with_the_output():
    x = torch.randn(3, 4)
    check = ModelCheck(Pair().eval(), x, atol=1e-5)
    check.verify(Pair(_shift(1, 0.9)))
    with pytest.raises(InferenceError, match=r"output\[1\] differs from the model's by up to"):
        check.verify(Pair(_shift(1, 1.1)))
    with pytest.raises(InferenceError, match=r"output\[0\] differs"):
        check.verify(Pair(lambda i, out: out + 0.09 * float(out.abs().max())))  # fine for output[1], not output[0]
    with pytest.raises(InferenceError, match=r"output\[0\] is torch.float32 \[3, 5\], expected torch.float32 \[3, 6\]"):
        check.verify(Pair(lambda i, out: out[:, :5] if i == 0 else out))
    with pytest.raises(InferenceError, match=r"output\[0\] is torch.float64 \[3, 6\], expected torch.float32"):
        check.verify(Pair(lambda i, out: out.double() if i == 0 else out))
