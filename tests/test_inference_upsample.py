"""Bilinear resizing as two one-axis passes (adapmtl.inference.upsample), inside compile_sparse."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adapmtl.inference import compile_sparse
from adapmtl.inference.upsample import SeparableUpsample, separable_interpolate

RESIZES = [dict(size=(13, 17)), dict(size=5), dict(size=(3, 2)), dict(size=(1, 1)), dict(scale_factor=2.5),
           dict(scale_factor=(0.5, 3.0)), dict(scale_factor=1.7, recompute_scale_factor=True)]


@pytest.mark.parametrize("resize", RESIZES, ids=str)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (1, 40, 11, 11), (3, 1, 1, 1), (1, 2, 10, 3)], ids=str)
def test_separable_bilinear_equals_f_interpolate(shape, resize, align_corners):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    try:
        expected = F.interpolate(x, mode="bilinear", align_corners=align_corners, **resize)
    except RuntimeError:  # an output size of 0 (1 pixel halved): it must fail too
        with pytest.raises(RuntimeError, match="sizes should be greater than 0"):
            separable_interpolate(x, mode="bilinear", align_corners=align_corners, **resize)
        return
    got = separable_interpolate(x, mode="bilinear", align_corners=align_corners, **resize)
    assert got.shape == expected.shape and got.is_contiguous()
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-6), (got - expected).abs().max()


def test_other_inputs_are_f_interpolate_itself():
    x = torch.randn(2, 3, 6, 5)
    double, channels_last = x.double(), x.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(separable_interpolate(double, size=(9, 4), mode="bilinear"),
                          F.interpolate(double, size=(9, 4), mode="bilinear"), atol=1e-12)
    assert torch.allclose(separable_interpolate(channels_last, size=(9, 4), mode="bilinear"),
                          F.interpolate(x, size=(9, 4), mode="bilinear"), atol=1e-6)
    for call in (dict(mode="nearest"), dict(mode="bicubic"), dict(mode="bilinear", antialias=True)):
        assert torch.equal(separable_interpolate(x, size=(9, 4), **call), F.interpolate(x, size=(9, 4), **call))
    assert torch.equal(separable_interpolate(x.half(), size=(9, 4), mode="bilinear"),
                       F.interpolate(x.half(), size=(9, 4), mode="bilinear"))
    infinite = torch.zeros(1, 2, 3, 3)
    infinite[0, 0, 1, 1], infinite[0, 1, 0, 2] = float("inf"), float("nan")
    assert torch.equal(separable_interpolate(infinite, size=(5, 5), mode="bilinear").isinf(),
                       F.interpolate(infinite, size=(5, 5), mode="bilinear").isinf())
    largest = torch.finfo(torch.float32).max
    for special in ([float("inf"), -float("inf")], [float("-inf"), 0.0], [float("nan"), 1.0], [largest, -largest],
                    [largest / 3, 0.0]):  # near the largest, PyTorch's a + w·(b − a) overflows where the passes do not
        values = torch.zeros(1, 2, 3, 3)
        values[0, 0, 1, 1], values[0, 1, 2, 0] = special
        expected = F.interpolate(values, size=(5, 7), mode="bilinear")
        torch.testing.assert_close(separable_interpolate(values, size=(5, 7), mode="bilinear"), expected,
                                   rtol=0, atol=0, equal_nan=True)  # the same kernel: bit for bit, NaN where it is
    with pytest.raises(ValueError, match="only one of size or scale_factor"):  # F.interpolate's own message
        separable_interpolate(x, size=(9, 4), scale_factor=2.0, mode="bilinear")


class Decoder(nn.Module):
    """A traced F.interpolate, an nn.Upsample module and an nn.UpsamplingBilinear2d, and a nearest one left alone."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.up_corners = nn.UpsamplingBilinear2d(size=(9, 7))
        self.nearest = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
        y = self.conv(x)
        return {"functional": F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False),
                "antialiased": F.interpolate(y, scale_factor=0.5, mode="bilinear", antialias=True),  # not split
                "module": self.up(y), "corners": self.up_corners(y), "nearest": self.nearest(y)}


def test_compile_sparse_runs_bilinear_resizing_separably():
    model = Decoder().eval()
    x = torch.randn(2, 3, 10, 11)
    compiled = compile_sparse(model, x, repeats=1)
    assert compiled.plan.separable_upsampling == 3
    assert "bilinear resizing: 3 run as two one-axis passes" in compiled.plan.summary()
    assert isinstance(compiled.module.up, SeparableUpsample) and isinstance(compiled.module.nearest, nn.Upsample)
    assert [n.target for n in compiled.module.graph.nodes if n.op == "call_function"].count(separable_interpolate) == 1
    with torch.no_grad():
        for inputs in (x, torch.randn(1, 3, 7, 5)):
            expected, got = model(inputs), compiled(inputs)
            for key in expected:
                assert got[key].is_contiguous()
                assert torch.allclose(got[key], expected[key], atol=1e-5), key
    assert compile_sparse(model, x, plan=compiled.plan).plan.separable_upsampling == 3
