"""`plain_state_dict`: a sparsified model's weights as the unmodified model's state_dict.

A sparsified model saves each pruned weight as its dense W under
`<layer>.parametrizations.<weight>.original` and the thresholds under `adapmtl_thresholds.*`
(AdapMTL, Xiang et al., ACM MM 2024; docs/method.md §1). A checkpoint written during training
(Lightning, Hugging Face Trainer, `torch.save(model.state_dict())`) therefore does not load into the
user's own model class. `plain_state_dict` turns it into one that does, with Ŵ (exact zeros) in place
of W: what `finalize(model)` (no target) would leave, without touching the model.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any, Mapping

import torch
from torch import nn

from adapmtl.errors import SparsifyError
from adapmtl.sparsity.bank import ThresholdBank, find_bank, groups_fingerprint
from adapmtl.sparsity.soft_threshold import SoftThreshold
from adapmtl.sparsity.sparsify import sparse_layers, sparsify

ORIGINAL = ".original"


@torch.no_grad()
def plain_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    *,
    prefix: str = "",
    **sparsify_options: Any,
) -> dict[str, torch.Tensor]:
    """The state_dict of the unmodified model, holding the thresholded weights Ŵ; `model` is not changed.

    Every pruned weight W (saved as `<layer>.parametrizations.<weight>.original`) becomes
    `<layer>.<weight>` = Ŵ = sign(W)·relu(|W| − min(τ_group, cap_layer)), τ = sigmoid(s) (the
    collapse guard's cap included: exactly the tensor the sparsified forward pass uses, so a plain
    model loaded with the result gives the same outputs in eval mode, bit for bit). The thresholds'
    entries (`adapmtl_thresholds.*`) are dropped; every other entry (biases, norm layers, buffers,
    layers left dense) is passed through unchanged (the same tensors, as `state_dict()` gives them).
    Ŵ has W's shape, dtype and device; its zeros are exact. Source: AdapMTL (ACM MM 2024),
    docs/method.md §1.

    Use it to load a checkpoint written during training into the plain model class::

        ckpt = torch.load("last.ckpt", weights_only=True)          # Lightning: module keys "net.…"
        net = Net()                                                # the unmodified class
        net.load_state_dict(plain_state_dict(net, ckpt["state_dict"], prefix="net."))

    Args:
        model: either the sparsified model the state_dict belongs to (or one sparsified alike), or
            the plain, unsparsified model: then a copy of it is sparsified with `sparsify_options`
            (which must be the options used in training: components, exclude, granularity,
            embeddings; `init` and `min_density` do not matter, their values come from the
            state_dict) only to learn which threshold each layer reads. Neither is modified.
        state_dict: the sparsified state_dict (a checkpoint's); None: `model.state_dict()`
            (`model` must then be sparsified).
        prefix: keep only the entries whose key starts with `prefix`, without it (e.g. "net." for a
            LightningModule that holds the model as `self.net`, "model." for one that holds it as
            `self.model`); "" keeps every entry.
        **sparsify_options: passed to `adapmtl.sparsify` when `model` is not sparsified.

    Returns:
        {key: tensor} with the unmodified model's keys, ready for `load_state_dict(..., strict=True)`.

    Raises:
        SparsifyError: `model` is not sparsified and no state_dict is given; `sparsify_options` are
            given with a sparsified model; the state_dict (after `prefix`) holds no thresholds, or
            thresholds of other groups or layers than the model's (sparsified with other options), or
            lacks a pruned layer's weight.
    """
    bank = find_bank(model)
    if bank is None:
        if state_dict is None:
            raise SparsifyError(f"plain_state_dict needs the state_dict to convert when this {type(model).__name__} "
                                "is not sparsified (pass the checkpoint's state_dict, or a sparsified model)")
        model = sparsify(copy.deepcopy(model), **sparsify_options)  # a template: only its layout is read
        bank = find_bank(model)
    elif sparsify_options:
        raise SparsifyError(f"this {type(model).__name__} is already sparsified; sparsify options "
                            f"({', '.join(sorted(sparsify_options))}) apply only to a plain model")
    state = dict(model.state_dict() if state_dict is None else state_dict)
    if prefix:
        state = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    bank_name = _module_name(model, bank)
    scores, caps = _bank_tensors(state, bank, bank_name, prefix)

    reader = SimpleNamespace(scores=scores, caps=caps)  # what SoftThreshold reads from a bank
    plain: dict[str, torch.Tensor] = {}
    converted: dict[str, torch.Tensor] = {}
    for layer in sparse_layers(model):
        module_name = _module_name(model, layer.module)
        stem = f"{module_name}." if module_name else ""
        key = f"{stem}parametrizations.{layer.attribute}.original"
        if key not in state:
            raise SparsifyError(f"the state_dict has no {prefix}{key!s} (the dense weight of pruned layer "
                                f"{layer.name!r}): it was not saved from this model, or needs another prefix")
        p = layer.parametrization
        threshold = SoftThreshold(reader, p.group, p.component, p.layer)  # the forward pass's own computation
        converted[key] = threshold(state[key].detach())
    bank_keys = {f"{bank_name}.{k}" if bank_name else k for k in bank.state_dict()}  # the bank's own entries
    for key, value in state.items():
        if key in bank_keys:
            continue
        if key in converted:
            plain[_plain_key(key)] = converted[key]
        else:
            plain[key] = value
    return plain




def _plain_key(key: str) -> str:
    """"a.b.parametrizations.weight.original" -> "a.b.weight" (also at the root: "parametrizations.weight.original")."""
    stem, _, rest = key.rpartition("parametrizations.")
    return stem + rest[: -len(ORIGINAL)]


def _module_name(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise SparsifyError("a sparsified layer is not a submodule of the model")  # cannot happen via sparse_layers


def _bank_tensors(state: dict[str, torch.Tensor], bank: ThresholdBank, bank_name: str,
                  prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The state_dict's scores and caps, checked against the model's threshold groups and layers."""
    stem = f"{bank_name}." if bank_name else ""
    scores, caps = state.get(stem + "scores"), state.get(stem + "caps")
    if not isinstance(scores, torch.Tensor) or not isinstance(caps, torch.Tensor):
        raise SparsifyError(f"the state_dict has no thresholds ({prefix}{stem}scores, {prefix}{stem}caps): it is not "
                            "a sparsified model's, or needs another prefix")
    saved = state.get(stem + "groups_fingerprint")
    expected = groups_fingerprint(bank.group_names, bank.granularity)
    if (scores.shape != bank.scores.shape or caps.shape != bank.caps.shape
            or (isinstance(saved, torch.Tensor) and int(saved) != expected)):
        raise SparsifyError(
            f"the state_dict's thresholds ({scores.numel()} groups, {caps.numel()} layers) were saved from a model "
            f"sparsified otherwise than this one (granularity={bank.granularity!r}, {bank.scores.numel()} groups, "
            f"{bank.caps.numel()} layers): pass the same components, exclude, granularity and embeddings as in "
            "training")
    return scores.detach(), caps.detach()
