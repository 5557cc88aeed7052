"""Activations fused into the Direct layer before them (adapmtl.inference.activation), inside compile_sparse."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adapmtl.inference import LayerChoice, Plan, compile_sparse, native
from adapmtl.inference.activation import clamp_of
from adapmtl.inference.fold import trace

needs_kernel = pytest.mark.skipif(native.kernels() is None, reason="no C compiler: " + native.status())


class Activations(nn.Module):
    """One conv per way of writing a clamp after it, and convs whose activation must stay separate."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(11))
        self.relu, self.relu6, self.hardtanh = nn.ReLU(inplace=True), nn.ReLU6(), nn.Hardtanh(-0.2, 0.3)

    def forward(self, x):
        c = self.convs
        fused = [self.relu(c[0](x)), self.relu6(c[1](x)), F.relu(c[2](x)), F.hardtanh(c[3](x), -0.5, 0.5),
                 c[4](x).clamp(min=0.1), torch.clamp(c[5](x), max=0.2), self.hardtanh(c[6](x)), c[7](x).relu()]
        used_twice = c[8](x)
        kept = [F.relu(used_twice) + used_twice,  # the conv's output is read elsewhere too
                torch.clamp(c[9](x), min=x.mean()),  # a tensor bound
                F.gelu(c[10](x))]  # not a clamp
        return {"fused": torch.stack(fused), "kept": torch.stack(kept)}


def _all_direct(model, x):
    """A plan with every layer on the direct path (timing may well pick dense on layers this small)."""
    layers = {n: LayerChoice("direct", 0.0) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    return Plan(layers, True, list(x.shape))


@needs_kernel
def test_clamps_after_a_direct_layer_are_fused_and_the_output_is_unchanged():
    model = Activations().eval()
    x = torch.randn(2, 4, 7, 9)
    compiled = compile_sparse(model, x, plan=_all_direct(model, x))
    assert compiled.plan.fused_activations == 8
    assert "activations fused into the layer before: 8" in compiled.plan.summary()
    graph = compiled.module.graph
    assert [n.target for n in graph.nodes if clamp_of(n, compiled.module)] == [F.relu]  # of the conv used twice
    assert [n.target for n in graph.nodes if n.target in (torch.clamp, F.gelu)] == [torch.clamp, F.gelu]
    with torch.no_grad():
        for inputs in (x, torch.randn(1, 4, 12, 5) * 5):
            expected, got = model(inputs), compiled(inputs)
            for key in expected:
                assert torch.allclose(got[key], expected[key], atol=1e-5), (key, (got[key] - expected[key]).abs().max())
    # a reload of the plan fuses the same activations
    assert compile_sparse(model, x, plan=compiled.plan).plan.fused_activations == 8


@needs_kernel
def test_a_layer_called_twice_keeps_its_activation_separate():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return F.relu(self.conv(x)) + self.conv(x)  # the second call must not be clamped

    model = Shared().eval()
    x = torch.randn(1, 3, 6, 6)
    compiled = compile_sparse(model, x, plan=_all_direct(model, x))
    assert compiled.plan.fused_activations == 0
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)


@needs_kernel
def test_hooks_and_changed_bounds_are_respected():
    hooked, changed = nn.ReLU(), nn.ReLU6()
    hooked.register_forward_hook(lambda module, args, out: out * 2 + 1)  # would no longer run if fused
    changed.max_val = 0.1  # a ReLU6 is a Hardtanh: its bound is an attribute
    model = nn.ModuleDict({"a": nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), hooked),
                           "b": nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), changed)}).eval()

    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.parts = model

        def forward(self, x):
            return self.parts["a"](x), self.parts["b"](x)

    whole = Both().eval()
    x = torch.randn(1, 3, 6, 7)
    compiled = compile_sparse(whole, x, plan=_all_direct(whole, x))
    assert compiled.plan.fused_activations == 1  # the changed ReLU6, at its own bound
    with torch.no_grad():
        for expected, got in zip(whole(x), compiled(x)):
            assert torch.allclose(got, expected, atol=1e-5)
    assert compiled(x)[1].max() <= 0.1


def test_only_clamps_with_constant_bounds_are_recognised():
    class Calls(nn.Module):
        def forward(self, x):
            return (F.relu6(x), torch.clip(x, -1, 1), x.clamp_(max=3.0), F.leaky_relu(x), x.clamp(min=x), torch.relu(x),
                    x.clamp(), x.clamp(min=float("nan")))

    traced = trace(Calls())
    bounds = [clamp_of(n, traced) for n in traced.graph.nodes if n.op in ("call_function", "call_method")]
    inf = float("inf")
    assert bounds == [(0.0, 6.0), (-1.0, 1.0), (-inf, 3.0), None, None, (0.0, inf), None, None]
