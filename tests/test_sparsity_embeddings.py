"""nn.Embedding weights are pruned only on request; otherwise the report lists them as left dense."""
import pytest
import torch
from torch import nn

import adapmtl
from adapmtl.errors import SparsifyError
from adapmtl.sparsity.soft_threshold import soft_threshold


class TokenModel(nn.Module):
    """backbone: Embedding(10 tokens, 4) + Linear(4→4); heads {"a": Linear(4→2)}."""

    def __init__(self, **embedding_options) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Embedding(10, 4, **embedding_options), nn.Linear(4, 4))
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 2)})

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": self.heads["a"](self.backbone(tokens))}


def test_embeddings_stay_dense_by_default_and_are_reported_so():
    torch.manual_seed(0)
    report = adapmtl.sparsity_report(adapmtl.sparsify(TokenModel(), init=-1.0))
    assert list(report.layers) == ["backbone.1", "heads.a"]
    assert report.dense_params["backbone.0.weight"] == 40
    assert sum(report.dense_params.values()) == 40 + 4 + 2  # embedding, two biases
    assert report.pruned_share == pytest.approx(24 / 70)
    assert "backbone.0.weight" in str(report)


def test_embeddings_opt_in_prunes_the_looked_up_rows():
    torch.manual_seed(0)
    model = adapmtl.sparsify(TokenModel(), init=-1.0, embeddings=True)
    report = adapmtl.sparsity_report(model)
    assert report.layers["backbone.0"].numel == 40
    assert "backbone.0.weight" not in report.dense_params
    dense = model.backbone[0].parametrizations.weight.original.detach()
    tau = torch.sigmoid(torch.tensor(-1.0))
    assert report.layers["backbone.0"].zeros == int((dense.abs() <= tau).sum())
    tokens = torch.tensor([[1, 5, 9]])
    with torch.no_grad():
        embedded = model.backbone[0](tokens)
        assert torch.equal(embedded, soft_threshold(dense, tau)[tokens])
        before = model(tokens)["a"]
        adapmtl.finalize(model)
        assert torch.equal(model(tokens)["a"], before)
    after = adapmtl.sparsity_report(model, embeddings=True)
    assert after.layers["backbone.0"].zeros == report.layers["backbone.0"].zeros
    assert "backbone.0.weight" in adapmtl.sparsity_report(model).dense_params


@pytest.mark.parametrize("options", [{"max_norm": 1.0}, {"sparse": True}])
def test_an_embedding_that_rewrites_or_bypasses_its_weight_is_refused(options):
    with pytest.raises(SparsifyError, match=r"embedding 'backbone.0' has max_norm=.*exclude the embedding"):
        adapmtl.sparsify(TokenModel(**options), embeddings=True)


def test_embeddings_must_be_a_bool():
    with pytest.raises(SparsifyError, match=r"embeddings must be True or False.*got 'yes'"):
        adapmtl.sparsify(TokenModel(), embeddings="yes")
