"""nn.MultiheadAttention's input projections are pruned like Linear weights, in every forward path."""
import copy
import math

import pytest
import torch
from torch import nn

import adapmtl
from adapmtl.sparsity.soft_threshold import soft_threshold


class TinyTransformer(nn.Module):
    """A two-layer, two-head TransformerEncoder backbone (d_model 8, feed-forward 16) and one Linear head."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.backbone = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.heads = nn.ModuleDict({"a": nn.Linear(8, 3)})
        with torch.no_grad():  # the encoder's layers start as copies of one: untie their magnitudes, as training would
            for parameter in self.parameters():
                parameter.normal_(0.0, 0.3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": self.heads["a"](self.backbone(x))}


# every 2-D weight of attention and feed-forward, and the head, with its shape, listed by hand
HAND_WEIGHTS = {
    **{f"backbone.layers.{i}.{name}": shape for i in range(2) for name, shape in [
        ("self_attn.in_proj_weight", (24, 8)), ("self_attn.out_proj", (8, 8)),
        ("linear1", (16, 8)), ("linear2", (8, 16))]},
    "heads.a": (3, 8),
}
# biases (in_proj 24, out_proj 8, linear1 16, linear2 8) and two LayerNorms (2 x (8 + 8)) per layer; head bias 3
HAND_DENSE = 2 * (24 + 8 + 16 + 8 + 32) + 3


def _model(seed: int = 0) -> TinyTransformer:
    torch.manual_seed(seed)
    return adapmtl.sparsify(TinyTransformer(), init=-2.5)


def _thresholded(model: nn.Module, name: str) -> torch.Tensor:
    """Ŵ of one weight computed here from its dense W and its group's τ (no guard binds at these sizes)."""
    layer = next(l for l in adapmtl.sparsity.sparse_layers(model) if l.name == name)
    tau = torch.sigmoid(model.adapmtl_thresholds.scores.detach()[layer.parametrization.group])
    return soft_threshold(layer.dense_weight.detach(), tau)


def _attention(x, w_q, w_k, w_v, b_in, w_out, b_out, heads):
    """Multi-head self-attention written out: x [batch, seq, d] -> [batch, seq, d]."""
    batch, seq, d = x.shape
    b_q, b_k, b_v = b_in.chunk(3)

    def split(t):  # [batch, seq, d] -> [batch, heads, seq, d / heads]
        return t.reshape(batch, seq, heads, d // heads).transpose(1, 2)

    q, k, v = split(x @ w_q.T + b_q), split(x @ w_k.T + b_k), split(x @ w_v.T + b_v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(batch, seq, d) @ w_out.T + b_out


def test_every_attention_and_feed_forward_weight_is_pruned_and_the_rest_reported_dense():
    report = adapmtl.sparsity_report(_model())
    assert {name: layer.numel for name, layer in report.layers.items()} == {
        name: rows * cols for name, (rows, cols) in HAND_WEIGHTS.items()}
    assert report.numel == 1048
    assert sum(report.dense_params.values()) == HAND_DENSE
    assert "backbone.layers.0.self_attn.in_proj_bias" in report.dense_params
    assert "adapmtl_thresholds.scores" not in report.dense_params
    assert report.pruned_share == pytest.approx(1048 / (1048 + HAND_DENSE))
    assert "1,048 prunable weights" in str(report) and f"{1048 / (1048 + HAND_DENSE):.2%}" in str(report)


@pytest.mark.parametrize("train", [True, False])
def test_attention_uses_the_thresholded_projections_in_train_and_eval(train):
    model = _model()
    model.train(train)
    attention = model.backbone.layers[0].self_attn
    x = torch.randn(2, 5, 8)
    w_in = _thresholded(model, "backbone.layers.0.self_attn.in_proj_weight")
    assert (w_in == 0).any() and (w_in != 0).any()
    expected = _attention(x, *w_in.chunk(3), attention.in_proj_bias.detach(),
                          _thresholded(model, "backbone.layers.0.self_attn.out_proj"),
                          attention.out_proj.bias.detach(), heads=2)
    with torch.no_grad(), torch.profiler.profile() as profile:  # in eval, PyTorch's fused fast path (needs no grad)
        out, _ = attention(x, x, x, need_weights=False)
    fused = any(e.key == "aten::_native_multi_head_attention" for e in profile.key_averages())
    assert fused == (not train)
    assert torch.allclose(out, expected, atol=1e-6)


def test_separate_query_key_value_projections_are_pruned():
    torch.manual_seed(0)
    attention = adapmtl.sparsify(nn.MultiheadAttention(8, 2, kdim=4, vdim=6, batch_first=True), init=-2.5,
                                 granularity="global")
    report = adapmtl.sparsity_report(attention)
    assert {n: l.numel for n, l in report.layers.items()} == {
        "q_proj_weight": 64, "k_proj_weight": 32, "v_proj_weight": 48, "out_proj": 64}
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 7, 4), torch.randn(2, 7, 6)
    w_q, w_k, w_v, w_out = (_thresholded(attention, n) for n in
                            ("q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj"))
    b_q, b_k, b_v = attention.in_proj_bias.detach().chunk(3)
    heads = lambda t: t.reshape(2, -1, 2, 4).transpose(1, 2)  # noqa: E731
    scores = heads(q @ w_q.T + b_q) @ heads(k @ w_k.T + b_k).transpose(-1, -2) / 2.0
    expected = (torch.softmax(scores, -1) @ heads(v @ w_v.T + b_v)).transpose(1, 2).reshape(2, 5, 8)
    expected = expected @ w_out.T + attention.out_proj.bias.detach()
    out, _ = attention(q, k, v, need_weights=False)
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("train", [True, False])
def test_finalize_without_target_keeps_outputs(train):
    model = _model().train(train)
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        before = model(x)["a"]
        adapmtl.finalize(model)
        # the same weights; in train mode PyTorch may pick another attention kernel than before (1 ulp apart)
        assert torch.allclose(model(x)["a"], before, rtol=0, atol=1e-6 if train else 0)
    assert not any("parametrizations" in k for k in model.state_dict())


def test_finalize_to_80_percent_over_exactly_the_hand_counted_weights():
    model = _model().eval()
    twin = copy.deepcopy(model)
    result = adapmtl.finalize(model, 0.8)
    parameters = dict(model.named_parameters())
    weights = [parameters[n if n.endswith("in_proj_weight") else n + ".weight"] for n in HAND_WEIGHTS]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert sum(w.numel() for w in weights) == 1048
    assert abs(zeros / 1048 - 0.8) <= 0.0005
    assert adapmtl.sparsity_report(model).overall == zeros / 1048 == result.after.overall
    with torch.no_grad():  # the sparsified model at the thresholds finalize chose gives the same outputs
        twin.adapmtl_thresholds.scores.add_(result.shift)
        x = torch.randn(2, 5, 8)
        assert torch.allclose(model(x)["a"], twin(x)["a"], atol=1e-6)
