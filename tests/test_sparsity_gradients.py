"""The soft threshold's values and gradients (docs/method.md §1)."""
import math

import torch

import adapmtl
from adapmtl.sparsity import soft_threshold
from tests.toy_models import LinearMultitask, total_loss


def test_soft_threshold_values_by_hand():
    w = torch.tensor([0.5, -0.2, 0.05, -0.01, 0.1, -0.1])
    out = soft_threshold(w, torch.tensor(0.1))
    assert torch.allclose(out, torch.tensor([0.4, -0.1, 0.0, 0.0, 0.0, 0.0]))
    assert (out[2:] == 0).all()  # exact zeros where |w| <= tau, the boundary included


def _sparsified_linear_model(score: float) -> LinearMultitask:
    torch.manual_seed(0)
    model = LinearMultitask().double()
    adapmtl.sparsify(model, init=score)
    # weights at least 0.05 away from tau = sigmoid(score) ~ 0.2, so finite differences stay off the kinks
    tau = 1 / (1 + math.exp(-score))
    for layer in adapmtl.sparsity.sparse_layers(model):
        w = layer.dense_weight.data
        w.copy_(torch.where(w.abs() < tau, w.sign() * (tau - 0.05) * torch.rand_like(w), w.sign() * (tau + 0.05 + w.abs())))
    return model


def _numeric_grad(loss_fn, tensor: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    grad = torch.zeros_like(tensor)
    flat, flat_grad = tensor.data.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        keep = flat[i].item()
        flat[i] = keep + eps
        up = loss_fn().item()
        flat[i] = keep - eps
        down = loss_fn().item()
        flat[i] = keep
        flat_grad[i] = (up - down) / (2 * eps)
    return grad


def test_gradients_of_weights_and_thresholds_match_finite_differences():
    model = _sparsified_linear_model(score=math.log(0.2 / 0.8))
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def loss():
        return total_loss(model(x))

    loss().backward()
    scores = adapmtl.threshold_parameters(model)[0]
    assert torch.allclose(scores.grad, _numeric_grad(loss, scores), atol=1e-7)
    for layer in adapmtl.sparsity.sparse_layers(model):
        original = layer.dense_weight
        assert torch.allclose(original.grad, _numeric_grad(loss, original), atol=1e-7), layer.name


def test_pruned_weights_get_no_task_gradient_and_threshold_gradient_follows_the_formula():
    model = _sparsified_linear_model(score=math.log(0.2 / 0.8))
    x = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    total_loss(model(x)).backward()
    scores = adapmtl.threshold_parameters(model)[0]
    tau = torch.sigmoid(scores.detach())

    layers = list(adapmtl.sparsity.sparse_layers(model))
    # dL/dŴ from a functional copy of the forward with Ŵ as leaves
    w_hat = {l.name: soft_threshold(l.dense_weight.detach(), tau[l.parametrization.group]).requires_grad_() for l in layers}
    features = torch.tanh(torch.nn.functional.linear(x, w_hat["backbone.0"], model.backbone[0].bias))
    outs = {t: torch.nn.functional.linear(features, w_hat[f"heads.{t}"], model.heads[t].bias) for t in ("a", "b")}
    grads = dict(zip(w_hat, torch.autograd.grad(total_loss(outs), list(w_hat.values()))))

    expected = torch.zeros_like(scores)
    sigmoid_prime = tau * (1 - tau)
    pruned_somewhere = False
    for layer in layers:
        w, g = layer.dense_weight.detach(), layer.parametrization.group
        alive = w.abs() > tau[g]
        pruned_somewhere |= bool((~alive).any())
        assert (layer.dense_weight.grad[~alive] == 0).all()  # pruned: no task gradient at all
        assert torch.allclose(layer.dense_weight.grad[alive], grads[layer.name][alive])  # kept: dL/dŴ
        expected[g] += -sigmoid_prime[g] * (w.sign() * grads[layer.name])[alive].sum()
    assert pruned_somewhere
    assert torch.allclose(scores.grad, expected)
