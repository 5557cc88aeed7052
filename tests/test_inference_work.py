"""Counting a forward's multiply-adds, and the measured peak the benchmark sets rates against."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adapmtl.inference import LayerChoice, Plan, native
from adapmtl.inference.geometry import conv_output_size, inside_positions
from adapmtl.inference.speed import slowest_layers
from adapmtl.inference.work import Work, core_peak_gflops, layer_work, model_work


@pytest.mark.parametrize("kernel, stride, padding, dilation, size, expected", [
    (3, 1, 1, 1, 5, [4, 5, 4]),  # a "same" 3x3: the outer taps miss one edge
    (3, 1, 6, 6, 11, [5, 11, 5]),  # dilation 6 on 11 pixels (MobileNetV2's ASPP at 321x321)
    (3, 1, 12, 12, 11, [0, 11, 0]),  # dilation 12: the centre tap alone
    (3, 2, 1, 1, 5, [2, 3, 2]),  # stride 2
    (1, 3, 2, 1, 1, [0]),  # outputs at -2 and 1 of a 1-pixel axis: all padding
])
def test_inside_positions_per_tap(kernel, stride, padding, dilation, size, expected):
    out_size = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    assert inside_positions(kernel, stride, padding, dilation, size, out_size) == expected


def test_inside_positions_match_a_brute_force_count():
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        kernel, stride, padding, dilation, size = (int(torch.randint(low, high, (), generator=generator))
                                                   for low, high in ((1, 6), (1, 4), (0, 9), (1, 7), (1, 15)))
        out_size = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        if out_size < 1:
            continue
        brute = [sum(0 <= o * stride - padding + k * dilation < size for o in range(out_size)) for k in range(kernel)]
        assert inside_positions(kernel, stride, padding, dilation, size, out_size) == brute


CONVS = [
    nn.Conv2d(6, 8, 3, padding=1),
    nn.Conv2d(6, 8, 3, padding=6, dilation=6),
    nn.Conv2d(6, 8, (5, 3), stride=(2, 1), padding=(1, 3), dilation=(1, 2)),
    nn.Conv2d(6, 6, 3, padding=1, groups=6),
    nn.Conv2d(6, 4, 3, stride=2, padding=1, groups=2, bias=False),
    nn.Conv2d(6, 8, 1),
    nn.Conv2d(6, 8, (3, 4), padding="same", dilation=2),  # even kernel: the odd padding pixel goes after
    nn.Conv2d(6, 8, 3, padding="valid"),
]


@pytest.mark.parametrize("layer", CONVS, ids=lambda layer: repr(layer))
def test_a_convolutions_multiply_adds_are_its_weights_times_the_pixels_they_reach(layer):
    with torch.no_grad():
        layer.weight.mul_(torch.rand(layer.weight.shape, generator=torch.Generator().manual_seed(1)) > 0.6)
    shape = (3, 6, 11, 9)
    # independent count: a convolution of an all-ones image by the weight's nonzero pattern sums, at each
    # output, the nonzero weights whose input is inside the image
    ones = torch.ones(shape)
    args = (None, layer.stride, layer.padding, layer.dilation, layer.groups)
    useful = F.conv2d(ones, layer.weight.ne(0).float(), *args).sum()
    dense = F.conv2d(ones, torch.ones_like(layer.weight), *args).sum()
    work = layer_work(layer, shape)
    assert work == Work(int(useful), int(dense))
    assert 0 < work.useful < work.dense
    out_h, out_w = F.conv2d(ones, layer.weight, *args).shape[2:]
    assert work.dense <= 3 * layer.weight.numel() * out_h * out_w  # never more than every tap at every output


def test_with_padding_that_is_data_every_tap_counts_at_every_output():
    layer = nn.Conv2d(4, 5, 3, padding=2, dilation=2, padding_mode="reflect")
    with torch.no_grad():
        layer.weight[:, :2] = 0
    out_h, out_w = conv_output_size(layer, 7, 6)
    assert layer_work(layer, (2, 4, 7, 6)) == Work(2 * 5 * 2 * 9 * out_h * out_w, 2 * 5 * 4 * 9 * out_h * out_w)


def test_a_linear_layers_multiply_adds_are_its_weights_times_the_rows():
    layer = nn.Linear(10, 7)
    with torch.no_grad():
        layer.weight[:, :4] = 0
    assert layer_work(layer, (2, 5, 10)) == Work(10 * 7 * 6, 10 * 7 * 10)
    with pytest.raises(TypeError, match="counts Conv2d and Linear layers, got LayerNorm"):
        layer_work(nn.LayerNorm(4), (2, 4))
    with pytest.raises(TypeError, match="got ReLU"):  # a layer without a weight: the same error
        layer_work(nn.ReLU(), (2, 4))


def test_an_unbatched_convolution_input_counts_as_one_image():
    layer = nn.Conv2d(3, 4, 3, padding=1)
    assert layer_work(layer, (3, 6, 5)) == layer_work(layer, (1, 3, 6, 5))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\] or \[C, H, W\], got shape \[6, 5\]"):
        layer_work(layer, (6, 5))


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.unused = nn.Conv2d(3, 3, 1)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        y = self.conv(self.conv(x))
        return self.head(y.mean(dim=(2, 3)))


def test_model_work_counts_every_call_and_leaves_no_hook():
    model = Twice()
    work = model_work(model, torch.randn(2, 3, 8, 8))
    assert set(work) == {"conv", "head"}  # a layer the forward never calls is not counted
    assert work["conv"] == layer_work(model.conv, (2, 3, 8, 8)) + layer_work(model.conv, (2, 3, 8, 8))
    assert work["head"] == Work(2 * 6, 2 * 6)
    assert sum(work.values()) == work["conv"] + work["head"]
    assert not model.conv._forward_pre_hooks and not model.head._forward_pre_hooks


class KeywordsAndNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = self.norm(self.conv(input=x))  # a layer called with a keyword
        return self.head(input=y.mean(dim=(2, 3)))


def test_model_work_sees_keyword_calls_and_leaves_the_models_state_alone():
    model = KeywordsAndNorm().train()
    model.norm.eval()
    work = model_work(model, torch.randn(2, 3, 5, 5))
    assert work["conv"] == layer_work(model.conv, (2, 3, 5, 5)) and work["head"] == Work(2 * 8, 2 * 8)
    assert model.training and model.conv.training and not model.norm.training  # each module's mode restored
    assert int(model.norm.num_batches_tracked) == 0  # counted in eval mode: no running statistics updated


def test_model_work_counts_the_attention_projections_that_pytorchs_fused_kernels_use_without_calling():
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
    model = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval()
    work = model_work(model, torch.randn(1, 5, 16))
    projections = {"layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj", "layers.0.self_attn.v_proj",
                   "layers.0.self_attn.out_proj"}
    assert projections <= set(work)
    assert all(work[name] == Work(5 * 16 * 16, 5 * 16 * 16) for name in projections)
    assert sum(work.values()).dense == 4 * 5 * 16 * 16 + 2 * 5 * 16 * 32
    assert type(model.layers[0]) is nn.TransformerEncoderLayer  # counted on a copy


def test_slowest_layers_give_the_chosen_paths_useful_rate():
    plan = Plan({"conv": LayerChoice("direct", 0.5, {"dense": 4.0, "direct": 2.0}),
                 "head": LayerChoice("dense", 0.0, {"dense": 1.0})}, False, (1, 3, 8, 8))
    text = slowest_layers(plan, 2, {"conv": Work(3_000_000, 6_000_000)})
    assert "(dense 4.00, direct 2.00 ms, 3 GFLOP/s useful)" in text  # 2 × 3e6 multiply-adds in 2 ms
    assert "(dense 1.00 ms)" in text  # no count given for this layer: no rate
    assert "GFLOP/s" not in slowest_layers(plan, 2)


@pytest.mark.skipif(native.kernels() is None, reason="no C compiler: " + native.status())
def test_the_core_peak_is_measured_from_the_kernels_vector_width():
    peak = core_peak_gflops(seconds=0.02)
    lanes = max(native.kernels().adapmtl_simd_lanes(), 1)
    # between one vector multiply-add a cycle at 0.2 GHz and four a cycle at 6 GHz (2 flops per lane each)
    assert 2 * lanes * 0.2 < peak < 2 * lanes * 4 * 6


def test_without_a_kernel_there_is_no_peak(monkeypatch):
    monkeypatch.setattr(native, "kernels", lambda name="sparse_conv2d": None)
    assert core_peak_gflops() is None
