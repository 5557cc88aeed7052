"""`compile_sparse`: run a finalized model with each layer on its fastest path."""
from __future__ import annotations

import copy
import json
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.fx as fx
from torch import nn

from adapmtl.files import write_atomic
from adapmtl.inference.activation import fuse_activations
from adapmtl.inference.check import InferenceError, ModelCheck, random_like
from adapmtl.inference.fingerprint import fingerprint, outputs_digest, weights_digest
from adapmtl.inference.fold import fold_batchnorm, layers_reached_otherwise
from adapmtl.inference.paths import build_path
from adapmtl.inference.timing import LayerChoice, LayerTimer
from adapmtl.inference.transformer import has_fused_transformers, unfuse_transformers
from adapmtl.inference.upsample import use_separable_upsampling
from adapmtl.sparsity.bank import find_bank

PLAN_VERSION = 1


@dataclass
class Plan:
    """Per-layer choices; `fused_batchnorm`: whether the model was traced by torch.fx and its
    conv→BN pairs folded where that is safe (see `adapmtl.inference.fold`); `fingerprint`: what
    lets a reload of the same weights skip the dense forward (`adapmtl.inference.fingerprint`)."""

    layers: dict[str, LayerChoice]
    fused_batchnorm: bool
    input_shape: list[int]
    fingerprint: dict[str, Any] | None = None
    separable_upsampling: int = 0  # bilinear resizings run by `adapmtl.inference.upsample` (not saved: redone)
    fused_activations: int = 0  # activations clamped by the layer before (`adapmtl.inference.activation`; redone)

    def save(self, path: str | Path) -> None:
        """Write the plan as JSON (reload with `Plan.load`, pass to `compile_sparse(plan=...)`).

        Raises OSError naming `path` if it cannot be written."""
        data = {"version": PLAN_VERSION, "fused_batchnorm": self.fused_batchnorm, "input_shape": self.input_shape,
                "layers": {name: asdict(choice) for name, choice in self.layers.items()}}
        if self.fingerprint:
            data["fingerprint"] = self.fingerprint
        write_atomic(path, json.dumps(data, indent=1).encode())

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        """The plan saved at `path`. Raises InferenceError if the file is not a plan of this version
        (whether it fits a model is checked by `compile_sparse`)."""
        try:
            data = json.loads(Path(path).read_text())
            version = data["version"]
            if version == PLAN_VERSION:
                layers = {name: LayerChoice(**choice) for name, choice in data["layers"].items()}
                return cls(layers, bool(data["fused_batchnorm"]), list(data["input_shape"]), data.get("fingerprint"))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InferenceError(f"{path} is not a compile_sparse plan: {error}") from None
        raise InferenceError(f"{path}: plan version {version!r}, this adapmtl reads version {PLAN_VERSION}: "
                             "compile the model again to record a new plan")

    def path_counts(self) -> dict[str, int]:
        """How many layers run by each path, e.g. {"dense": 36, "direct": 26, "csr": 10}."""
        counts: dict[str, int] = {}
        for choice in self.layers.values():
            counts[choice.path] = counts.get(choice.path, 0) + 1
        return counts

    def summary(self) -> str:
        """A table: layer, sparsity, chosen path, and each path's time."""
        rows = [f"{'layer':<44} {'sparsity':>8}  {'path':<7} times (ms)"]
        for name, c in self.layers.items():
            times = ", ".join(f"{p} {t:.2f}" for p, t in c.times_ms.items())
            reused = f" (timed as {c.timed_as})" if c.timed_as else ""
            rows.append(f"{name:<44} {c.sparsity:>8.1%}  {c.path:<7} {times}{reused}")
        if self.fused_activations:
            rows.append(f"activations fused into the layer before: {self.fused_activations} (adapmtl.inference.activation)")
        if self.separable_upsampling:
            rows.append(f"bilinear resizing: {self.separable_upsampling} run as two one-axis passes "
                        "(adapmtl.inference.upsample)")
        return "\n".join(rows)


class SparseCompiled(nn.Module):
    """A compiled model: the (BN-folded) model with layers replaced by their paths."""

    def __init__(self, module: nn.Module, plan: Plan) -> None:
        super().__init__()
        self.module = module
        self.plan = plan

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The model's outputs, computed by the chosen paths. Inference only: run without autograd, so
        that no output claims a gradient the native kernels do not give (a backward raises)."""
        with torch.no_grad():
            return self.module(*args, **kwargs)


def _capture_inputs(model: nn.Module, names: list[str], example: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """({layer name: its first input}, the model's outputs) from one forward of `model` on `example`."""
    modules = dict(model.named_modules())
    inputs: dict[str, torch.Tensor] = {}

    def keep_first(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple) -> None:  # returns None: the call's input is not replaced
            inputs.setdefault(name, args[0])
        return hook

    hooks = [modules[n].register_forward_pre_hook(keep_first(n)) for n in names]
    try:
        outputs = model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return inputs, outputs


def _layer_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def _compiled(working: nn.Module, plan: Plan) -> SparseCompiled:
    """`working`, its layers on their paths, as a SparseCompiled model, after the rewrites outside the layers:
    bilinear resizing in two passes and, in a traced model, activations fused into the direct layer before
    them. Their counts go into the plan (a copy of `plan`); the whole-model check covers both."""
    upsampling = use_separable_upsampling(working)
    fused = fuse_activations(working) if isinstance(working, fx.GraphModule) else 0
    return SparseCompiled(working, replace(plan, separable_upsampling=upsampling, fused_activations=fused))


SPARSITY_DRIFT = 0.05  # a layer's sparsity this far from the plan's: the plan was made for other weights


def _with_current_sparsity(working: nn.Module, names: list[str], plan: Plan) -> tuple[dict[str, LayerChoice], str]:
    """(the plan's choices with each layer's sparsity as it is now, a warning or ""). The warning names the
    timed layers that moved over SPARSITY_DRIFT since the plan was made: its paths still give the right
    outputs, but they were chosen as fastest for other weights (a dense layer on a sparse path is slower than
    dense). A hand-written choice, with no times, was made for no weights in particular and is not named."""
    layers, moved = {}, []
    for name in names:
        choice = plan.layers.get(name)
        if choice is None:  # _layer_paths_from_plan says what does not fit
            continue
        sparsity = float(working.get_submodule(name).weight.eq(0).float().mean())
        if choice.times_ms and abs(sparsity - choice.sparsity) > SPARSITY_DRIFT:
            moved.append(f"{name} {choice.sparsity:.1%} → {sparsity:.1%}")
        layers[name] = replace(choice, sparsity=sparsity)
    if not moved:
        return layers, ""
    return layers, (f"the plan was made for other weights: {len(moved)} layer(s) changed sparsity since "
                    f"({', '.join(moved[:3])}{', ...' if len(moved) > 3 else ''}); the outputs are still checked "
                    "against the model, but compile without plan= to choose the fastest paths for these weights")


def _layer_paths_from_plan(working: nn.Module, names: list[str], plan: Plan) -> None:
    """Replace each layer by the path `plan` recorded for it; InferenceError where the plan does not fit."""
    missing, extra = sorted(set(names) - set(plan.layers)), sorted(set(plan.layers) - set(names))
    if missing or extra:
        raise InferenceError(f"the plan does not match the model's layers: {len(missing)} of the model's layers "
                             f"are not in the plan {missing[:5]}, {len(extra)} of the plan's are not in the model "
                             f"{extra[:5]} (a plan from another model?)")
    for name in names:
        path = plan.layers[name].path
        try:
            module = build_path(working.get_submodule(name), path)
        except ValueError as error:
            raise InferenceError(f"the plan does not fit layer {name!r}: {error}") from None
        _set_module(working, name, module)


def _unfused(model: nn.Module, check: ModelCheck) -> nn.Module:
    """`model` with PyTorch's fused transformer blocks rewritten (`adapmtl.inference.transformer`),
    or `model` itself where it has none, or (with a RuntimeWarning) where the rewritten model does
    not give `check`'s outputs."""
    if not has_fused_transformers(model):
        return model
    rewritten, _ = unfuse_transformers(copy.deepcopy(model))
    try:
        check.verify(rewritten, "the model with its transformer blocks unfused")
    except InferenceError as error:
        warnings.warn(f"{error}; compiling with PyTorch's fused transformer blocks (their layers stay dense)",
                      RuntimeWarning, stacklevel=4)  # past compile_sparse and its torch.no_grad wrapper
        return model
    return rewritten


def _reloaded_unchanged(model: nn.Module, example_input: torch.Tensor, plan: Plan) -> SparseCompiled | None:
    """The compiled model rebuilt from `plan` if it reproduces, bit for bit, the outputs that passed the
    check when the plan was made, on the same weights and thread count (`adapmtl.inference.fingerprint`);
    else None (the caller checks against the dense model)."""
    record = plan.fingerprint
    # anything but a float input of the plan's shape gets the ordinary check, which also says what is wrong
    if (not record or record.get("threads") != torch.get_num_threads() or not isinstance(example_input, torch.Tensor)
            or not example_input.is_floating_point() or list(example_input.shape) != list(plan.input_shape)
            or has_fused_transformers(model)
            or record.get("weights") != weights_digest(model)):
        return None
    working = copy.deepcopy(model).eval()
    working, fused = fold_batchnorm(working, None) if plan.fused_batchnorm else (working, False)
    try:
        _layer_paths_from_plan(working, _layer_names(working), plan)
    except InferenceError:
        return None
    compiled = _compiled(working, Plan(plan.layers, fused, plan.input_shape, record))
    shape = torch.Size(plan.input_shape)
    random = random_like(torch.empty(shape, dtype=example_input.dtype, device=example_input.device))
    try:
        outputs = compiled(random)
    except Exception:  # the ordinary check will say what fails
        return None
    return compiled if outputs_digest(outputs) == record.get("outputs") else None


@torch.no_grad()
def compile_sparse(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    plan: Plan | str | Path | None = None,
    repeats: int = 5,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> SparseCompiled:
    """A copy of the finalized `model`, in eval mode, that runs every Conv2d/Linear by its fastest path.

    Paths (see `adapmtl.inference.paths`): "dense", "shrunk" (all-zero filters and unread
    input channels removed), "csr" (sparse weight × dense input; for Linear layers the native
    sparse Linear kernel) and "direct" (native convolution kernel). PyTorch's transformer blocks
    (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder), whose fused eval
    path never calls their Linear layers, are first rewritten into equivalent modules that do
    (`adapmtl.inference.transformer`; the attention's in-projection becomes q_proj, k_proj and
    v_proj layers, named so in the plan). BatchNorm is folded into the preceding convolutions
    first, only where the conv and the BN are each used once (`adapmtl.inference.fold`;
    skipped if torch.fx cannot trace the model). Bilinear resizing runs as two one-axis passes
    (`adapmtl.inference.upsample`) and, in a traced model, a ReLU/ReLU6/hardtanh/clamp whose input is a
    direct layer's output alone is done by that layer's kernel (`adapmtl.inference.activation`); the
    plan counts both. Each candidate runs on the layer's real input (captured from
    `example_input`, a float tensor such as [batch, 3, H, W]); the fastest median of up to
    `repeats` runs wins, and the chosen path must match the dense output within rtol/atol.
    Timing is shared by identical layers and skips candidates that cannot win
    (`adapmtl.inference.timing`: a few seconds to tens of seconds for the paper models). With
    `plan` (a Plan or its JSON file) the recorded choices are reused and nothing is timed. The
    result's `.plan` records the choices; `.plan.save(path)`.

    Always, plan or not, the compiled model is checked against `model` in eval mode
    (`adapmtl.inference.check.ModelCheck`: every output within atol + 1e-3 × its largest
    magnitude in float32): on `example_input` and on a random input of its shape when
    compiling; on `example_input` alone when reloading a plan (its paths passed both when it was
    made; this keeps a reload to one dense and one compiled forward). A reload with the weights
    and thread count the plan was checked with skips the dense forward where the compiled model
    reproduces the checked outputs bit for bit (`adapmtl.inference.fingerprint`).

    `model` is not changed. It must be an ordinary (finalized) model: call
    `adapmtl.finalize(model)` first.

    Raises InferenceError: `model` is not finalized, `example_input` is not a float tensor
    or the model fails on it, `plan` is not a plan or does not fit the model's layers, or
    the compiled model's outputs differ from the model's (the message names the output and
    the difference).
    """
    if find_bank(model) is not None:
        raise InferenceError("compile_sparse needs a finalized model: call adapmtl.finalize(model) first")
    if isinstance(plan, str) and plan.lstrip().startswith("{"):
        raise InferenceError("plan: pass a Plan or the path of its JSON file, not the JSON text itself")
    if isinstance(plan, (str, Path)):
        plan = Plan.load(plan)
    elif plan is not None and not isinstance(plan, Plan):
        raise InferenceError(f"plan: expected a Plan or the path of its JSON file, got {type(plan).__name__}")
    if plan is not None and (same := _reloaded_unchanged(model, example_input, plan)) is not None:
        return same
    working = copy.deepcopy(model).eval()
    check = ModelCheck(working, example_input, atol, random_input=plan is None)
    unfolded = _unfused(working, check)
    # BatchNorm folded (as the plan says, when there is one); checked below and at the end
    working, fused = fold_batchnorm(unfolded, None) if plan is None or plan.fused_batchnorm else (unfolded, False)
    names = _layer_names(working)
    if plan is not None:  # one check at the end, on the example input: reloading takes one dense forward
        layers, drift = _with_current_sparsity(working, names, plan)
        _layer_paths_from_plan(working, names, plan)
        if drift:  # stacklevel: past compile_sparse's torch.no_grad wrapper, to the caller
            warnings.warn(drift, RuntimeWarning, stacklevel=3)
        compiled = _compiled(working, Plan(layers, fused, plan.input_shape))
        check.verify(compiled)
        return compiled

    inputs, outputs = _capture_inputs(working, names, example_input)
    if fused:  # the folding's check on the example input, from the same forward (the random input: at the end)
        try:
            check.compare("the example input", outputs, "the model with BatchNorm folded")
        except InferenceError as error:
            warnings.warn(f"{error}; compiling without folding BatchNorm", RuntimeWarning, stacklevel=3)
            working, fused = unfolded, False
            names = _layer_names(working)
            inputs, _ = _capture_inputs(working, names, example_input)
    # layers the graph also reads otherwise (a weight passed to a function) stay as they are
    kept = layers_reached_otherwise(working) if isinstance(working, fx.GraphModule) else set()
    timer = LayerTimer(repeats, rtol, atol)
    choices = {}
    for name in names:
        layer = working.get_submodule(name)
        x = inputs.get(name)
        if x is None or name in kept:  # not reached by this input, or not only by calls: keep it dense
            choices[name] = LayerChoice("dense", float(layer.weight.eq(0).float().mean()))
            continue
        choices[name], module = timer.choose(name, layer, x)
        if choices[name].path != "dense":
            _set_module(working, name, module)
    compiled = _compiled(working, Plan(choices, fused, list(example_input.shape)))
    check.verify(compiled)
    if not has_fused_transformers(model):
        compiled.plan.fingerprint = fingerprint(model, check.got["a random input"])
    return compiled
