"""Sparse Linear layers in compile_sparse: the native kernel, its fallback, and transformer blocks
whose Linear layers PyTorch's fused eval path would never call."""
import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adapmtl.inference import LayerChoice, Plan, candidate_paths, compile_sparse, native
from adapmtl.inference.attention import SplitAttention
from adapmtl.inference.csr_linear import CSRLinear
from adapmtl.inference.speed import slowest_layers
from adapmtl.inference.transformer import UnfusedEncoder, UnfusedEncoderLayer, unfuse_transformers

needs_kernel = pytest.mark.skipif(native.kernels("sparse_linear") is None,
                                  reason="no C compiler: " + native.status("sparse_linear"))


def _sparse_linear(in_features: int, out_features: int, bias: bool = True, density: float = 0.1,
                   seed: int = 0) -> nn.Linear:
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(layer.weight.shape, generator=generator) < density)
        if out_features > 2:
            layer.weight[1].zero_()  # an empty row: its output is the bias
    return layer.eval()


def _prune(model: nn.Module, sparsity: float = 0.9) -> nn.Module:
    """Every Linear weight and every attention in-projection at `sparsity`, random unstructured."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            for weight in (getattr(module, "weight", None), getattr(module, "in_proj_weight", None)):
                if isinstance(module, (nn.Linear, nn.MultiheadAttention)) and isinstance(weight, torch.Tensor):
                    weight.mul_(torch.rand(weight.shape, generator=generator) >= sparsity)
    return model.eval()


# tokens and features around the vector width (8 or 16 floats) and across the tile sizes
TOKENS = [1, 7, 16, 17, 40, 197]
FEATURES = [(1, 1), (3, 5), (16, 17), (33, 31)]


@needs_kernel
@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("in_features, out_features", FEATURES)
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_equals_f_linear(tokens, in_features, out_features, bias):
    layer = _sparse_linear(in_features, out_features, bias, density=0.3)
    x = torch.randn(tokens, in_features, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = CSRLinear(layer)(x)
    assert got.shape == (tokens, out_features) and got.is_contiguous()
    assert torch.allclose(got, F.linear(x, layer.weight, layer.bias), atol=1e-5)


@needs_kernel
def test_all_zero_weight_leading_dimensions_and_threads():
    layer = nn.Linear(20, 9)
    with torch.no_grad():
        layer.weight.zero_()
        x = torch.randn(2, 3, 20)
        assert torch.equal(CSRLinear(layer)(x), layer.bias.expand(2, 3, 9))
        assert CSRLinear(layer)(torch.randn(0, 20)).shape == (0, 9)
        dense = _sparse_linear(70, 45)
        csr, x = CSRLinear(dense), torch.randn(3, 50, 70)
        alone = csr(x)
        torch.set_num_threads(2)
        assert torch.equal(csr(x), alone)  # the thread count does not change a bit
        assert torch.allclose(csr(x.transpose(0, 1)), dense(x.transpose(0, 1)), atol=1e-5)  # a strided input
        assert torch.equal(csr.dense_weight(), dense.weight)
    with pytest.raises(ValueError, match=r"expected input \[\.\.\., 70\], got \[3, 69\]"):
        csr(torch.randn(3, 69))


def _call_library(library, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The kernel of `library` (any build) called directly, as CSRLinear calls it."""
    csr = CSRLinear(layer)
    out = torch.empty(x.shape[0], layer.out_features)
    scratch = torch.zeros(layer.in_features * library.adapmtl_linear_stride(x.shape[0]) + 16)
    scratch = scratch[(-scratch.data_ptr() % 64) // 4:]
    library.adapmtl_sparse_linear_f32(x.data_ptr(), out.data_ptr(), csr.row_start.data_ptr(), csr.columns.data_ptr(),
                                      csr.values.data_ptr(), csr.bias.data_ptr() if csr.bias is not None else None,
                                      scratch.data_ptr(), x.shape[0], layer.in_features, layer.out_features, 3, 2)
    return out


def _cpu_has(flag: str) -> bool:
    try:
        return flag in open("/proc/cpuinfo").read().split()
    except OSError:
        return False


@needs_kernel
@pytest.mark.parametrize("flags, lanes", [
    ("-O2", 0),  # the portable loop: machines without AVX2
    pytest.param("-O3 -march=native -mno-avx512f -fopenmp", 8,
                 marks=pytest.mark.skipif(not (_cpu_has("avx2") and _cpu_has("fma")), reason="no AVX2")),
    pytest.param("-O3 -march=native -fopenmp", 16,
                 marks=pytest.mark.skipif(not _cpu_has("avx512f"), reason="no AVX-512")),
])
def test_every_kernel_build_is_correct(flags, lanes, tmp_path):
    path = native.build(native.find_compiler(), flags.split(), tmp_path, native.SOURCES["sparse_linear"])
    library = native._load(path, "sparse_linear")
    assert library.adapmtl_simd_lanes() == lanes
    for tokens, (in_features, out_features), bias in itertools.product([1, 9, 17, 50], FEATURES, [True, False]):
        layer = _sparse_linear(in_features, out_features, bias, density=0.3)
        x = torch.randn(tokens, in_features)
        assert torch.allclose(_call_library(library, layer, x), layer(x).detach(), atol=1e-5), (tokens, in_features)


def test_without_the_kernel_csr_runs_on_pytorch(monkeypatch):
    monkeypatch.setitem(native._state, "sparse_linear", (None, "no kernel in this test"))
    layer = _sparse_linear(24, 10)
    assert "csr" in candidate_paths(layer)
    x = torch.randn(2, 5, 24)
    with torch.no_grad():
        assert torch.allclose(candidate_paths(layer)["csr"](x), layer(x), atol=1e-5)
    monkeypatch.undo()
    double = CSRLinear(layer).double()  # the kernel is float32: float64 runs on PyTorch
    with torch.no_grad():
        assert torch.allclose(double(x.double()), layer.double()(x.double()), atol=1e-12)


class TimmBlock(nn.Module):
    """A pre-norm ViT block as timm writes it: one qkv Linear, scaled_dot_product_attention, proj, MLP."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(batch, tokens, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + self.proj(attended)
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class Encoder(nn.Module):
    """A conv+BN stem (so that BatchNorm folding has work), a position embedding (a parameter of
    the root, which torch.fx reads: the layers inside must still count as only called),
    PyTorch's TransformerEncoder, two heads."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 4, stride=4), nn.BatchNorm2d(dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 20, dim) / 10)
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(dim))
        self.heads = nn.ModuleDict({"a": nn.Linear(dim, 3), "b": nn.Linear(dim, 1)})

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.encoder(self.stem(image).flatten(2).transpose(1, 2) + self.pos_embed)
        return {name: head(tokens) for name, head in self.heads.items()}


def _check_every_linear_reached(model: nn.Module, x: torch.Tensor, expected_layers: int) -> None:
    compiled = compile_sparse(model, x, repeats=1)  # raises InferenceError unless the outputs agree
    plan = compiled.plan
    assert len(plan.layers) == expected_layers
    linear = {name: choice for name, choice in plan.layers.items() if "stem" not in name}
    # timed on its real input (the csr path may be skipped by the cost model: adapmtl.inference.timing)
    assert all("dense" in choice.times_ms for choice in linear.values()), plan.summary()
    assert "not called as modules" not in slowest_layers(plan, 3)
    # the timed choice may be dense on layers this small: force the sparse path on every Linear
    paths = {name: LayerChoice("csr" if name in linear else "dense", c.sparsity) for name, c in plan.layers.items()}
    forced = Plan(paths, plan.fused_batchnorm, plan.input_shape)
    sparse = compile_sparse(model, x, plan=forced)
    with torch.no_grad():
        expected, got = model(x), sparse(x)
    for name in (expected if isinstance(expected, dict) else {"": None}):
        want, have = (expected[name], got[name]) if name else (expected, got)
        assert torch.allclose(have, want, atol=1e-4), (name, (have - want).abs().max())


def test_a_pytorch_transformer_encoder_runs_every_linear_by_a_sparse_path():
    torch.manual_seed(0)
    model = _prune(Encoder())
    with torch.no_grad():
        model.stem[1].running_mean.uniform_(-1, 1)
    # per layer: q_proj, k_proj, v_proj, out_proj, linear1, linear2; and the stem conv and two heads
    _check_every_linear_reached(model, torch.randn(2, 3, 16, 20), 2 * 6 + 3)
    compiled = compile_sparse(model, torch.randn(2, 3, 16, 20), repeats=1)
    assert compiled.plan.fused_batchnorm  # the encoder is kept whole by torch.fx, the stem folded
    assert "encoder.layers.1.self_attn.q_proj" in compiled.plan.layers
    assert type(model.encoder.layers[0].self_attn) is nn.MultiheadAttention  # the model itself is not changed


def test_timm_style_blocks_run_every_linear_by_a_sparse_path():
    torch.manual_seed(0)
    _check_every_linear_reached(_prune(nn.Sequential(TimmBlock(), TimmBlock())), torch.randn(1, 21, 32), 8)


def test_a_bare_encoder_layer_and_a_bare_attention_compile():
    torch.manual_seed(0)
    layer = _prune(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, norm_first=True, activation="gelu"))
    compiled = compile_sparse(layer, torch.randn(3, 9, 16), repeats=1)
    assert sorted(compiled.plan.layers) == ["linear1", "linear2", "self_attn.k_proj", "self_attn.out_proj",
                                            "self_attn.q_proj", "self_attn.v_proj"]


MASKS = {
    "none": lambda b, t, s: {},
    "padding": lambda b, t, s: {"key_padding_mask": torch.arange(s).expand(b, s) >= s - torch.arange(b).view(-1, 1)},
    "attention": lambda b, t, s: {"attn_mask": torch.rand(t, s, generator=torch.Generator().manual_seed(3)) > 0.7},
    "float both": lambda b, t, s: {"attn_mask": torch.randn(t, s), "key_padding_mask": torch.zeros(b, s)},
}


@pytest.mark.parametrize("options", [
    {}, {"batch_first": True}, {"bias": False}, {"add_bias_kv": True}, {"add_zero_attn": True},
    {"kdim": 6, "vdim": 5}, {"num_heads": 1},
])
@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("need_weights", [True, False])
def test_split_attention_equals_multihead_attention(options, mask, need_weights):
    torch.manual_seed(0)
    options = {"num_heads": 2, **options}
    attention = nn.MultiheadAttention(8, dropout=0.1, **options).eval()
    split = SplitAttention(attention)
    batch, tgt, src = 3, 4, 5
    layout = (lambda n, d: (batch, n, d)) if attention.batch_first else (lambda n, d: (n, batch, d))
    query = torch.randn(layout(tgt, 8))
    key, value = torch.randn(layout(src, attention.kdim)), torch.randn(layout(src, attention.vdim))
    masks = MASKS[mask](batch, tgt, src)
    calls = [(query, key, value, masks)]
    if attention._qkv_same_embed_dim:  # self-attention (PyTorch's fused path) and an unbatched call
        calls.append((query, query, query, MASKS[mask](batch, tgt, tgt)))
        unbatched = {n: m[0] if n == "key_padding_mask" else m for n, m in masks.items()}
        first = (lambda t: t[0]) if attention.batch_first else (lambda t: t[:, 0])
        calls.append((first(query), first(key), first(value), unbatched))
    with torch.no_grad():
        for q, k, v, m in calls:
            expected = attention(q, k, v, need_weights=need_weights, **m)
            got = split(q, k, v, need_weights=need_weights, **m)
            assert torch.allclose(got[0], expected[0], atol=1e-5)
            assert (got[1] is None) == (expected[1] is None)
            if expected[1] is not None:
                assert torch.allclose(got[1], expected[1], atol=1e-6)


@pytest.mark.parametrize("batch_first, norm_first, nested",
                         [(True, False, True), (True, True, False), (False, False, False)])
def test_unfused_encoder_equals_the_fused_one_with_masks(batch_first, norm_first, nested):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=batch_first, norm_first=norm_first, activation="gelu")
    encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16), enable_nested_tensor=nested).eval()
    unfused, count = unfuse_transformers(copy.deepcopy(encoder))
    assert count == 5 and isinstance(unfused, UnfusedEncoder) and isinstance(unfused.layers[1], UnfusedEncoderLayer)
    x = torch.randn((3, 6, 16) if batch_first else (6, 3, 16))
    padding = torch.arange(6).expand(3, 6) >= torch.tensor([[6], [4], [5]])  # left-aligned: PyTorch may nest
    causal = nn.Transformer.generate_square_subsequent_mask(6)
    with torch.no_grad():
        for masks in [{}, {"src_key_padding_mask": padding}, {"mask": causal}, {"mask": causal, "is_causal": True}]:
            assert torch.allclose(unfused(x, **masks), encoder(x, **masks), atol=1e-5), masks


def test_shared_attention_stays_shared():
    attention = nn.MultiheadAttention(8, 2)
    model = nn.ModuleDict({"a": attention, "b": attention})
    unfused, count = unfuse_transformers(model)
    assert count == 1 and unfused["a"] is unfused["b"] and isinstance(unfused["a"], SplitAttention)
