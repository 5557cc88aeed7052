"""Binary masks over a model's prunable weights, shared by the mask-based methods.

A `MaskSet` holds one boolean mask per prunable weight tensor, exactly those the
soft-threshold core prunes (`adapmtl.sparsity.prunable_weights`: every Conv/Linear `weight`,
keyed by its module's name as before, and nn.MultiheadAttention's input projections, keyed
"<module>.in_proj_weight" or "<module>.q_proj_weight" etc.), each tensor's component
(backbone, one per head), and:

- `apply()`: zero the pruned weights (after every optimizer step);
- a gradient hook per weight that zeroes the pruned entries' gradients, so Adam's
  moments never move them (switched off with `raw_gradients()` to score pruned weights);
- `keep_top(scores, keep)`: keep exactly `keep` weights with the highest scores over the
  whole model, ties broken by position (tensor order, then element index), so a target
  sparsity is met to the weight and the same scores always give the same mask; with the
  collapse guard (`min_density`, as for the soft thresholds: `adapmtl.sparsity.guard`),
  every tensor first keeps its max(1, ⌈min_density · n⌉) best-scored weights, and
  `guarded` names the tensors where that changed the choice;
- `state_dict()` / `load_state_dict()` for exact resumes, keyed by the tensor names above
  (a Conv/Linear-only model's names are its layer names, so its older checkpoints load).

`MaskedMethod` is the base of every method that prunes with such masks: it builds the
masks in `prepare`, applies them after every step, and at `finalize` leaves ordinary
weights whose exact zeros are the mask (sparsity_report gives the target).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from adapmtl.methods.base import Method, MethodContext, MethodError
from adapmtl.sparsity import PruneScope
from adapmtl.sparsity.finalize import TARGET_TOLERANCE
from adapmtl.sparsity.guard import DEFAULT_MIN_DENSITY, keep_count


class MaskSet:
    """One boolean mask per prunable weight tensor of `model` (`prunable_weights`; all True:
    dense); `min_density` is the collapse guard's share of every tensor that `keep_top` never
    prunes (0: none); `scope` chooses the weights and components as `sparsify` would.

    Raises ComponentError (from `prunable_weights`) when the model has nothing to prune, or the
    scope's patterns do not fit the model.
    """

    def __init__(self, model: nn.Module, min_density: float = DEFAULT_MIN_DENSITY,
                 scope: PruneScope = PruneScope()) -> None:
        self.min_density = float(min_density)
        self.guarded: list[str] = []  # tensors the guard held at their minimum in the last keep_top
        self.tensors = scope.weights(model)  # {name: (module, attribute)}
        self.component_of = scope.component_of(model)
        self.masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in self.weights().items()}
        self.numel = sum(m.numel() for m in self.masks.values())
        self._hooks_on = True
        for name, weight in self.weights().items():
            weight.register_hook(self._gradient_hook(name))

    def _gradient_hook(self, name: str):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            return grad * self.masks[name] if self._hooks_on else grad
        return hook

    @contextmanager
    def raw_gradients(self) -> Iterator[None]:
        """Within this block, backward gives the pruned weights their true gradients."""
        self._hooks_on = False
        try:
            yield
        finally:
            self._hooks_on = True

    def to(self, device: torch.device) -> None:
        """Move the masks to `device` (where the model's weights are)."""
        self.masks = {name: m.to(device) for name, m in self.masks.items()}

    def weights(self) -> dict[str, torch.Tensor]:
        """{tensor name: the weight tensor itself, getattr(module, attribute)}."""
        return {name: getattr(module, attribute) for name, (module, attribute) in self.tensors.items()}

    @property
    def zeros(self) -> int:
        """Pruned weights over the whole model."""
        return self.numel - int(sum(int(m.sum()) for m in self.masks.values()))

    def zeros_for(self, target: float) -> int:
        """The number of pruned weights that makes the overall sparsity `target`.

        Raises MethodError if `target` is not a sparsity in [0, 1).
        """
        if not 0.0 <= target < 1.0:
            raise MethodError(f"target sparsity must lie in [0, 1), got {target!r}")
        return round(target * self.numel)

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights in place."""
        for name, weight in self.weights().items():
            weight.mul_(self.masks[name])

    @torch.no_grad()
    def keep_top(self, scores: dict[str, torch.Tensor], keep: int, *, among: dict[str, torch.Tensor] | None = None) -> None:
        """Keep exactly the `keep` weights with the highest `scores` (one per masked tensor, by name).

        With `among` (boolean masks), only those positions compete; the others keep
        their current mask state and `keep` counts only the competitors kept.
        Ties are broken by position: the earlier tensor and element wins. The collapse
        guard first keeps, in every tensor, its best-scored competitors up to
        keep_count(n, min_density) kept weights in all (see the module doc).

        Raises MethodError when `keep` exceeds the competitors, or is below what the guard keeps.
        """
        names = list(self.masks)
        sizes = [self.masks[n].numel() for n in names]
        flat = torch.cat([scores[n].detach().reshape(-1).double().cpu() for n in names])
        allowed = None if among is None else torch.cat([among[n].reshape(-1).cpu() for n in names])
        candidates = torch.arange(flat.numel()) if allowed is None else allowed.nonzero().flatten()
        if not 0 <= keep <= candidates.numel():
            raise MethodError(f"cannot keep {keep} weights out of {candidates.numel()} candidates")
        order = candidates[torch.sort(flat[candidates], descending=True, stable=True).indices]
        layer_of = torch.repeat_interleave(torch.arange(len(names)), torch.tensor(sizes))[order]
        # the guard: each layer's best competitors, up to its minimum less what it keeps outside `among`
        need = torch.tensor([keep_count(size, self.min_density) - (0 if among is None else
                             int((self.masks[n] & ~among[n]).sum())) for n, size in zip(names, sizes)])
        by_layer = torch.sort(layer_of, stable=True).indices  # score order within each layer
        starts = torch.cumsum(torch.bincount(layer_of, minlength=len(names)), 0) - torch.bincount(layer_of, minlength=len(names))
        rank = torch.empty_like(by_layer)
        rank[by_layer] = torch.arange(by_layer.numel()) - starts[layer_of[by_layer]]
        protected = rank < need[layer_of]
        if int(protected.sum()) > keep:
            raise MethodError(f"cannot keep only {keep} weights: the collapse guard keeps {int(protected.sum())} "
                              f"(every weight tensor at least max(1, ceil({self.min_density:g} x its weights))); lower the "
                              "target or method.min_density (0 allows tensors to collapse)")
        rest = ~protected
        take = protected | (rest & (torch.cumsum(rest, 0) <= keep - int(protected.sum())))
        plain = torch.bincount(layer_of[:keep], minlength=len(names))  # what the guard-free choice keeps
        self.guarded = [n for i, n in enumerate(names) if int(plain[i]) < int(need[i])]
        chosen = torch.zeros(flat.numel(), dtype=torch.bool)
        chosen[order[take]] = True
        offset = 0
        for n in names:
            size = self.masks[n].numel()
            part = chosen[offset: offset + size].view_as(self.masks[n]).to(self.masks[n].device)
            if allowed is None:
                self.masks[n] = part
            else:
                region = allowed[offset: offset + size].view_as(self.masks[n]).to(self.masks[n].device)
                self.masks[n] = torch.where(region, part, self.masks[n])
            offset += size
        self.apply()

    def prune_magnitude(self, target: float) -> None:
        """Global magnitude pruning of the current weights to overall sparsity `target`."""
        self.keep_top({n: w.abs() for n, w in self.weights().items()}, self.numel - self.zeros_for(target))

    def check(self, target: float) -> None:
        """Raise a MethodError when the masks do not give overall sparsity `target` (±0.0005).

        Raises MethodError naming the sparsity reached.
        """
        got = self.zeros / self.numel
        if abs(got - target) > TARGET_TOLERANCE:
            raise MethodError(f"the masks give overall sparsity {got:.4%}, not the target {target:.4%}")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """{tensor name: a copy of its mask} (names as in the module doc)."""
        return {name: m.clone() for name, m in self.masks.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the masks saved by `state_dict`.

        Raises MethodError when `state` names other tensors than this model's (e.g. a checkpoint
        from before attention projections were masked, for a model that has them).
        """
        if set(state) != set(self.masks):
            raise MethodError(f"mask state for tensors {sorted(state)} does not match the model's {sorted(self.masks)}")
        for name, m in state.items():
            self.masks[name] = m.to(device=self.masks[name].device, dtype=torch.bool)


class MaskedMethod(Method):
    """A method that prunes with fixed or scheduled binary masks (see MaskSet)."""

    def prepare(self, model: nn.Module) -> None:
        self.maskset = MaskSet(model, self.options.min_density, self.scope)
        self.final_step = 0  # the step after which the masks no longer change

    @property
    def selection_start(self) -> int:
        return self.final_step + 1

    def bind(self, context: MethodContext) -> None:
        super().bind(context)
        self.maskset.to(next(iter(self.maskset.weights().values())).device)

    def step_at(self, fraction: float) -> int:
        """The step at `fraction` of training (at least 0, at most train.steps)."""
        return min(self.steps, max(0, round(fraction * self.steps)))

    def update_masks(self, model: nn.Module, step: int) -> None:
        """Change the masks after `step` when the method's schedule says so (default: never)."""

    def after_step(self, model: nn.Module, step: int) -> None:
        self.update_masks(model, step)
        self.maskset.apply()
        return None

    def finalize(self, model: nn.Module) -> None:
        self.maskset.apply()
        self.maskset.check(self.options.target)
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"masks": self.maskset.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.maskset.load_state_dict(state["masks"])
