"""The native "direct" sparse convolution: every geometry, every kernel build, and the fallbacks."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adapmtl.inference import Direct, candidate_paths, compile_sparse, native
from adapmtl.inference.paths import build_path

needs_kernel = pytest.mark.skipif(native.kernels() is None, reason="no C compiler: " + native.status())

CONVS = {
    "1x1 with bias": lambda: nn.Conv2d(8, 6, 1),
    "3x3 stride 2": lambda: nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=False),
    "stride 1 by 2": lambda: nn.Conv2d(8, 6, 3, stride=(1, 2), padding=1),
    "stride 2 by 1, dilation 1 by 3": lambda: nn.Conv2d(8, 6, 3, stride=(2, 1), padding=(0, 3), dilation=(1, 3)),
    "3x3 no padding": lambda: nn.Conv2d(8, 6, 3),  # output smaller than input: the row-tile kernel
    "3x3 dilation 2": lambda: nn.Conv2d(8, 6, 3, padding=2, dilation=2),
    "dilation past the image": lambda: nn.Conv2d(8, 12, 3, padding=30, dilation=30),  # off-centre taps see padding
    "5x3 odd kernel": lambda: nn.Conv2d(8, 6, (5, 3), padding=(2, 1)),
    "depthwise": lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6),
    "depthwise, dilation past the image": lambda: nn.Conv2d(6, 6, 3, padding=20, dilation=20, groups=6),
    "grouped": lambda: nn.Conv2d(8, 6, 3, padding=1, groups=2),
    # over 16 nonzeros per input channel: the kernel runs on an aligned copy with planes padded to whole vectors
    "1x1, many outputs": lambda: nn.Conv2d(8, 64, 1),
    "3x3 dilation 2, many outputs": lambda: nn.Conv2d(8, 64, 3, padding=2, dilation=2),
}
# widths 11, 23 and 53 reach the kernel's three tile shapes (one, two and three vectors of columns)
SHAPES = [(1, 9, 11), (3, 17, 23), (2, 6, 53)]


def _sparse(layer: nn.Conv2d, seed: int = 0) -> nn.Conv2d:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(layer.weight.shape, generator=generator) >= 0.7)
        layer.weight[1].zero_()  # an all-zero filter
    return layer.eval()


@needs_kernel
@pytest.mark.parametrize("name", list(CONVS))
@pytest.mark.parametrize("batch, height, width", SHAPES)
@pytest.mark.parametrize("block", [None, 3])  # the nonzeros in one block of input channels, or in blocks of 3
@pytest.mark.parametrize("clamp", [None, (-0.3, 0.4)])  # a fused activation: clamped as the kernel stores
def test_direct_matches_the_dense_conv(name, batch, height, width, block, clamp):
    torch.manual_seed(1)
    layer = _sparse(CONVS[name]())
    direct = Direct(layer, block)
    assert direct.blocks == (1 if block is None else -(-layer.in_channels // 3))
    x = torch.randn(batch, layer.in_channels, height, width)
    if clamp:
        direct.fuse_clamp(*clamp)
    with torch.no_grad():
        expected, got = layer(x), direct(x)
        if clamp:  # filter 1 is all zero: its last block adds nothing, yet must store the clamped bias
            expected = expected.clamp(*clamp)
            assert expected.gt(clamp[0]).any() and expected.lt(clamp[1]).any()
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert torch.equal(direct.dense_weight(), layer.weight.detach())
    assert direct.values.numel() == int(layer.weight.ne(0).sum())  # only the nonzeros are kept


@needs_kernel
def test_all_zero_layer_is_its_bias_and_a_strided_input_is_fine():
    layer = nn.Conv2d(4, 3, 3, padding=1).eval()
    with torch.no_grad():
        layer.weight.zero_()
    x = torch.randn(2, 4, 7, 9)
    with torch.no_grad():
        out = Direct(layer)(x)
        assert torch.equal(out, layer.bias.view(1, 3, 1, 1).expand(2, 3, 7, 9))
        dense = _sparse(nn.Conv2d(4, 3, 3, padding=1))
        channels_last = x.to(memory_format=torch.channels_last)
        assert torch.allclose(Direct(dense)(channels_last), dense(x), atol=1e-5)


@needs_kernel
def test_threads_split_the_work_without_changing_a_bit():
    layer = _sparse(nn.Conv2d(16, 32, 3, padding=2, dilation=2))
    direct, x = Direct(layer), torch.randn(3, 16, 20, 37)
    with torch.no_grad():
        alone = direct(x)
        torch.set_num_threads(2)
        together = direct(x)
    assert torch.equal(alone, together)


def test_block_size_follows_density():
    # about BLOCK_NONZEROS nonzeros per (output channel, block): small blocks for dense weights, one for sparse
    layer = nn.Conv2d(512, 64, 3, padding=1)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(layer.weight.shape, generator=torch.Generator().manual_seed(0)) >= 0.5)
    assert Direct(layer).block_channels == 16  # 4.5 nonzeros per (output, input) channel: 64 / 4.5 → 15, at least 16
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[:, :256, 1, 1] = 1.0  # now 0.5 nonzeros per (output, input) channel: 128 channels per block
    assert Direct(layer).block_channels == 128 and Direct(layer).blocks == 4
    assert Direct(nn.Conv2d(32, 32, 3, groups=32)).blocks == 1  # depthwise: never blocked


def test_other_dtypes_and_bad_inputs():
    layer = _sparse(nn.Conv2d(8, 6, 3, padding=1))
    direct = Direct(layer).double()  # the kernel is float32: float64 runs through F.conv2d
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(direct(x), layer.double()(x), atol=1e-12)
        with pytest.raises(ValueError, match=r"expected input \[batch, 8, height, width\], got \[2, 5, 5, 5\]"):
            direct(torch.randn(2, 5, 5, 5, dtype=torch.float64))
    assert not Direct.applies(nn.Conv2d(8, 6, 3, padding="same"))
    assert not Direct.applies(nn.Linear(8, 6))


@needs_kernel
def test_a_fused_clamp_keeps_nan_and_applies_on_every_dtype():
    layer = _sparse(nn.Conv2d(8, 6, 3, padding=1))
    direct = Direct(layer)
    direct.fuse_clamp(0.0, 6.0)  # ReLU6
    x = torch.randn(1, 8, 5, 5) * 10
    x[0, :, 2, 2] = float("nan")  # reaches the 3x3 window around (2, 2) of every output channel with a nonzero there
    with torch.no_grad():
        # against torch.clamp of the unclamped sparse output (a dense conv also spreads NaN through zero weights)
        expected, got = Direct(layer)(x).clamp(0, 6), direct(x)
        assert torch.equal(got.isnan(), expected.isnan()) and got.isnan().any()
        assert torch.allclose(got.nan_to_num(), expected.nan_to_num(), atol=1e-5)
        assert got.nan_to_num().min() == 0 and got.nan_to_num().max() == 6
        # float64 runs through F.conv2d, with the same clamp
        x = torch.randn(1, 8, 5, 5, dtype=torch.float64) * 10
        assert torch.allclose(direct.double()(x), layer.double()(x).clamp(0, 6), atol=1e-12)
    assert "clamp" not in direct.state_dict()  # redone on reload, not a weight


def _run_python(code: str, **env: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **env}, cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stderr
    return result.stdout


CHECK_EVERY_CONV = """
import torch, test_inference_direct as t
from adapmtl.inference import Direct, native
print(native.kernels().adapmtl_simd_lanes())
for name, make in t.CONVS.items():
    for batch, height, width in t.SHAPES:
        layer = t._sparse(make()); x = torch.randn(batch, layer.in_channels, height, width)
        with torch.no_grad():
            for block in (None, 3):
                assert torch.allclose(Direct(layer, block)(x), layer(x), atol=1e-5), (name, height, width, block)
                clamped = Direct(layer, block)
                clamped.fuse_clamp(0.0, 0.5)
                assert torch.allclose(clamped(x), layer(x).clamp(0, 0.5), atol=1e-5), (name, height, width, block)
"""


def _cpu_has(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


@needs_kernel
@pytest.mark.parametrize("flags, lanes", [
    ("-O2", 0),  # the portable loop: machines without AVX2
    pytest.param("-O3 -march=native -mno-avx512f", 8,
                 marks=pytest.mark.skipif(not (_cpu_has("avx2") and _cpu_has("fma")), reason="no AVX2")),
    pytest.param("-O3 -march=native", 16, marks=pytest.mark.skipif(not _cpu_has("avx512f"), reason="no AVX-512")),
])
def test_every_kernel_build_is_correct(flags, lanes, tmp_path):
    out = _run_python(CHECK_EVERY_CONV, ADAPMTL_NATIVE_FLAGS=flags, ADAPMTL_CACHE_DIR=str(tmp_path))
    assert out.split() == [str(lanes)]
    assert len(list((tmp_path / "native").glob("sparse_conv2d-*.so"))) == 1


@needs_kernel
def test_the_built_kernel_is_cached(tmp_path):
    compiler = native.find_compiler()
    first = native.build(compiler, ["-O2"], tmp_path)
    stamp = first.stat().st_mtime_ns
    assert native.build(compiler, ["-O2"], tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert native.build(compiler, ["-O1"], tmp_path) != first  # other flags: another library
    with pytest.raises(RuntimeError, match="failed"):
        native.build(compiler, ["-fno-such-option-anywhere"], tmp_path)


WITHOUT_KERNEL = """
import warnings, torch
from torch import nn
from adapmtl.inference import native, candidate_paths
from adapmtl.inference.paths import build_path
layer = nn.Conv2d(8, 6, 3, padding=1).eval()
with torch.no_grad():
    layer.weight[0].zero_()
assert native.kernels() is None
print(native.status())
print(sorted(candidate_paths(layer)))
x = torch.randn(1, 8, 7, 7)
with warnings.catch_warnings(record=True) as caught, torch.no_grad():
    warnings.simplefilter("always")
    assert torch.allclose(build_path(layer, "direct")(x), layer(x), atol=1e-5)
print(caught[0].message)
"""


def test_without_a_kernel_direct_is_not_offered_but_a_plan_with_it_still_runs():
    out = _run_python(WITHOUT_KERNEL, ADAPMTL_NO_NATIVE="1").splitlines()
    assert out[0] == "disabled by ADAPMTL_NO_NATIVE=1"
    assert out[1] == "['csr', 'dense', 'shrunk']"
    assert "runs as a dense convolution" in out[2]
    out = _run_python(WITHOUT_KERNEL, CC="no-such-compiler").splitlines()
    assert out[0].startswith("no C compiler found")


@pytest.mark.parametrize("value, disabled", [("1", True), ("yes", True), ("0", False), ("false", False),
                                             (" OFF ", False), ("no", False), ("", False)])
def test_adapmtl_no_native_reads_as_a_reader_would(monkeypatch, value, disabled):
    monkeypatch.setenv("ADAPMTL_NO_NATIVE", value)
    assert native.disabled_by_environment() is disabled


@needs_kernel
def test_compile_sparse_picks_direct_where_it_is_fastest():
    # 95 % sparse 3x3 convolution with a large dilation: the direct path skips nearly everything
    torch.manual_seed(0)
    model = nn.Sequential(_sparse(nn.Conv2d(64, 64, 3, padding=12, dilation=12)), nn.ReLU())
    with torch.no_grad():
        model[0].weight.mul_(torch.rand(model[0].weight.shape) >= 0.8)
    x = torch.randn(1, 64, 24, 24)
    compiled = compile_sparse(model, x, repeats=3)
    choice = compiled.plan.layers["0"]
    assert set(choice.times_ms) == {"dense", "shrunk", "csr", "direct"}
    assert choice.path == min(choice.times_ms, key=choice.times_ms.get)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)
    assert isinstance(build_path(model[0], "direct"), Direct) and "direct" in candidate_paths(model[0])


@needs_kernel
def test_direct_is_offered_for_a_dense_conv_since_it_skips_padding():
    dense = nn.Conv2d(4, 4, 3, padding=12, dilation=12)  # on a map under 12 pixels, 8 of 9 taps see padding
    assert set(candidate_paths(dense)) == {"dense", "direct"}
    x = torch.randn(1, 4, 10, 10)
    with torch.no_grad():
        assert torch.allclose(candidate_paths(dense)["direct"](x), dense(x), atol=1e-5)
    assert set(candidate_paths(nn.Linear(4, 4))) == {"dense"}


@pytest.mark.parametrize("kernel, stride, padding, dilation, size, expected", [
    (3, 1, 12, 12, 11, range(1, 2)),  # dilation 12 on 11 pixels: the centre tap alone
    (3, 1, 6, 6, 11, range(0, 3)),  # dilation 6: every tap reaches some pixel
    (3, 1, 6, 6, 6, range(1, 2)),  # ... but not on 6 pixels
    (5, 1, 8, 4, 7, range(1, 4)),  # taps at -8, -4, 0, 4, 8: the outer two miss 7 pixels
    (3, 2, 0, 1, 9, range(0, 3)),  # no padding: every tap is inside
    (1, 3, 2, 1, 1, range(0)),  # outputs at -2 and 1 of a 1-pixel axis: no tap sees it
])
def test_inside_taps_are_those_that_reach_the_image(kernel, stride, padding, dilation, size, expected):
    from adapmtl.inference.geometry import inside_taps
    out_size = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    assert inside_taps(kernel, stride, padding, dilation, size, out_size) == expected


@needs_kernel
def test_taps_that_see_only_padding_are_dropped_per_input_size():
    # dilation 12: a 1x1 convolution on 11x11 maps, a full 3x3 one on 30x30; both exact
    layer = _sparse(nn.Conv2d(16, 8, 3, padding=12, dilation=12))
    direct = Direct(layer)
    small, large = torch.randn(2, 16, 11, 11), torch.randn(1, 16, 30, 30)
    with torch.no_grad():
        assert torch.allclose(direct(small), layer(small), atol=1e-5)
        trimmed = direct._for_size[(11, 11)].nonzeros
        assert trimmed.kernel_size == (1, 1) and trimmed.padding == (0, 0)
        assert trimmed.values.numel() == int(layer.weight[:, :, 1, 1].ne(0).sum())
        assert torch.allclose(direct(large), layer(large), atol=1e-5)
        assert direct._for_size[(30, 30)].nonzeros.values is direct.values  # every tap reaches a 30x30 map
        # weights changed in place (a load_state_dict does this) are never served from the stale trim
        direct.values.mul_(2)
        layer.weight.mul_(2)
        assert torch.allclose(direct(small), layer(small), atol=1e-5)


@needs_kernel
def test_the_kept_kernel_arguments_follow_every_buffer_the_kernel_reads():
    # the kernel's arguments (addresses) are kept per input size; each change below must be seen by the next call
    layer = _sparse(nn.Conv2d(6, 5, 3, padding=1))
    direct = Direct(layer)
    x = torch.randn(1, 6, 9, 9)
    with torch.no_grad():
        assert torch.allclose(direct(x), layer(x), atol=1e-5)
        direct.bias = direct.bias + 1.0  # a new tensor in the buffer's place
        layer.bias.add_(1.0)
        assert torch.allclose(direct(x), layer(x), atol=1e-5)
        direct.values = direct.values * 2.0
        layer.weight.mul_(2.0)
        assert torch.allclose(direct(x), layer(x), atol=1e-5)
        direct.load_state_dict({**direct.state_dict(), "values": direct.values / 2.0})  # copied in place
        layer.weight.div_(2.0)
        assert torch.allclose(direct(x), layer(x), atol=1e-5)
        direct.fuse_clamp(0.0, 0.25)
        assert torch.allclose(direct(x), layer(x).clamp(0.0, 0.25), atol=1e-5)
        direct.bias = None
        assert torch.allclose(direct(x), F.conv2d(x, layer.weight, None, padding=1).clamp(0.0, 0.25), atol=1e-5)


@needs_kernel
def test_a_replaced_buffer_never_passes_for_the_one_a_size_was_prepared_with():
    # on an 8x8 map a dilation-12 layer runs a trimmed copy of its nonzeros; replacing `values` several times
    # between calls must not let a new tensor take the old one's address (and version 0) and pass for it
    layer = _sparse(nn.Conv2d(16, 8, 3, padding=12, dilation=12))
    direct = Direct(layer)
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        direct(x)
        prepared_with = direct.values
        for scale in (2.0, 3.0, 5.0):
            direct.values = direct.values * scale
            layer.weight.mul_(scale)
            assert direct._for_size[(8, 8)].buffers[2] is prepared_with  # held: its address cannot be reused
        assert torch.allclose(direct(x), layer(x), atol=1e-4)
        assert direct._for_size[(8, 8)].buffers[2] is direct.values


@needs_kernel
def test_a_layer_keeps_a_bounded_number_of_input_sizes(monkeypatch):
    from adapmtl.inference import direct as direct_module
    monkeypatch.setattr(direct_module, "MAX_SIZES_KEPT", 2)
    layer = _sparse(nn.Conv2d(8, 6, 3, padding=12, dilation=12))
    direct = Direct(layer)
    with torch.no_grad():
        for size in (5, 9, 14, 30):
            x = torch.randn(1, 8, size, size)
            assert torch.allclose(direct(x), layer(x), atol=1e-5), size
            assert len(direct._for_size) <= 2
