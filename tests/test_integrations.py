"""Integrations (part of issue 15): the thresholds' own optimizer group with the engine's learning-rate
rule, a real Lightning fit and a real Hugging Face Trainer run to an exact target, checkpoints that load
into the plain model class, and optional imports that `import adapmtl` never needs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

import adapmtl
from adapmtl.errors import SparsifyError
from adapmtl.integrations import (
    THRESHOLD_ROLE, SparsifyRecipe, plain_state_dict, split_threshold_group, threshold_lr, threshold_param_groups,
)
from adapmtl.sparsity.budget import PAPER_BUDGET, threshold_lr_scale
from adapmtl.sparsity.finalize import TARGET_TOLERANCE
from tests.toy_models import ConvMultitask

TARGET = 0.5  # 1,296 of the toy model's 2,592 prunable weights
CONTROLLER_TOLERANCE = 5e-3  # SparsityController's default: it holds the target within this from reach_at on


def _images(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n, 8, 8), generator=g),
            torch.randn(n, 1, 8, 8, generator=g))


def _loss(outputs: dict[str, torch.Tensor], seg: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(outputs["seg"], seg) + nn.functional.l1_loss(outputs["depth"], depth)


def _sparsity(model: nn.Module) -> float:
    """Share of exact zeros over the plain model's Conv weights (all of them are prunable here)."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def _same_outputs(a: nn.Module, b: nn.Module) -> None:
    a.eval(), b.eval()
    x = _images(4, seed=7)[0]
    with torch.no_grad():
        out_a, out_b = a(x), b(x)
    for task in ("seg", "depth"):
        assert torch.equal(out_a[task], out_b[task]), task


# --- optional imports -----------------------------------------------------------------------------------
IMPORT_CHECK = """
import json, sys
import adapmtl, adapmtl.integrations
import tests.test_integrations  # collecting this module needs neither framework
frameworks = {"lightning", "pytorch_lightning", "transformers", "accelerate"}
loaded = sorted({m.split(".")[0] for m in sys.modules} & frameworks)
sys.modules["lightning"] = None      # as if not installed
sys.modules["transformers"] = None
messages = {}
for name in ("lightning", "transformers"):
    try:
        __import__("adapmtl.integrations." + name)
    except ImportError as error:
        messages[name] = str(error)
print(json.dumps({"loaded": loaded, "messages": messages}))
"""


def test_adapmtl_imports_no_framework_and_a_missing_one_names_its_extra():
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["loaded"] == []
    assert 'pip install "adapmtl[lightning]"' in result["messages"]["lightning"]
    assert 'pip install "adapmtl[transformers]"' in result["messages"]["transformers"]


# --- the learning-rate rule ------------------------------------------------------------------------------
def test_threshold_lr_is_the_engines_rule():
    # the paper's recipe: k = 1
    assert threshold_lr(1e-3, 20_000, lr_step=4000, lr_gamma=0.5) == pytest.approx(1e-3)
    # a constant lr over 500 steps: 7.75 / 0.5 logits
    assert threshold_lr(1e-3, 500) == pytest.approx(1e-3 * PAPER_BUDGET / 0.5)
    k = threshold_lr_scale(1e-3, 100, 0.5, 500)
    assert threshold_lr(1e-3, 500, lr_step=100, lr_gamma=0.5) == pytest.approx(1e-3 * k)
    # a schedule read from its per-step factor: linear decay halves the budget
    assert threshold_lr(1e-3, 500, lr_lambda=lambda t: 1 - t / 500) == pytest.approx(
        1e-3 * PAPER_BUDGET / (1e-3 * sum(1 - t / 500 for t in range(500))))
    assert threshold_lr(1e-3, 500, threshold_lr=0.05) == 0.05  # hand-set: k = 1, as train.threshold_lr
    assert threshold_lr(1e-3, 500, scale=3.0) == pytest.approx(3e-3)
    assert threshold_lr(1.0, 10) == 1.0  # a long run's own budget is larger: never slowed down
    for bad in ({"scale": 0}, {"scale": "fast"}, {"threshold_lr": -1.0}):
        with pytest.raises(ValueError):
            threshold_lr(1e-3, 500, **bad)


def test_threshold_param_groups_for_a_hand_built_optimizer():
    model = adapmtl.sparsify(ConvMultitask())
    groups = threshold_param_groups(model, lr=1e-3, total_steps=500, weight_decay=0.0)
    assert groups[1]["params"] == adapmtl.threshold_parameters(model)
    assert groups[1]["lr"] == pytest.approx(1e-3 * PAPER_BUDGET / 0.5) and groups[1]["role"] == THRESHOLD_ROLE
    assert len(groups[0]["params"]) + 1 == len(list(model.parameters()))
    optimizer = torch.optim.Adam(groups, lr=1e-3)
    assert split_threshold_group(optimizer, model, 5.0) is optimizer.param_groups[1]  # already its own: unchanged
    assert optimizer.param_groups[1]["lr"] == pytest.approx(1e-3 * PAPER_BUDGET / 0.5)


SCHEDULERS = {
    "StepLR": lambda o: lr_scheduler.StepLR(o, 3, 0.5),
    "LambdaLR": lambda o: lr_scheduler.LambdaLR(o, lambda t: 1 / (1 + t)),
    "OneCycleLR": lambda o: lr_scheduler.OneCycleLR(o, max_lr=1e-2, total_steps=20),
    "CosineAnnealingLR": lambda o: lr_scheduler.CosineAnnealingLR(o, 12),
    "SequentialLR": lambda o: lr_scheduler.SequentialLR(
        o, [lr_scheduler.LinearLR(o, 0.1, total_iters=4), lr_scheduler.ExponentialLR(o, 0.8)], [4]),
    "ReduceLROnPlateau": lambda o: lr_scheduler.ReduceLROnPlateau(o, patience=0, factor=0.5),
}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_split_group_keeps_the_schedule_scaled(name):
    torch.manual_seed(0)
    model = adapmtl.sparsify(ConvMultitask(), init=-3.0)
    optimizer = torch.optim.Adam([{"params": [p for n, p in model.named_parameters() if "bias" in n], "lr": 2e-3},
                                  {"params": [p for n, p in model.named_parameters() if "bias" not in n]}], lr=1e-3)
    scheduler = SCHEDULERS[name](optimizer)
    group = split_threshold_group(optimizer, model, 10.0, schedulers=[scheduler])
    source = optimizer.param_groups[1]
    assert optimizer.param_groups[-1] is group and group["params"] == adapmtl.threshold_parameters(model)
    assert group["role"] == THRESHOLD_ROLE and not any(p is group["params"][0] for p in source["params"])
    x, seg, depth = _images(8)
    start = source["lr"]
    for _ in range(12):
        assert group["lr"] == pytest.approx(10 * source["lr"], rel=1e-9), (name, optimizer.param_groups)
        optimizer.zero_grad()
        _loss(model(x), seg, depth).backward()
        optimizer.step()
        scheduler.step(1.0) if name == "ReduceLROnPlateau" else scheduler.step()
    assert group["lr"] == pytest.approx(10 * source["lr"], rel=1e-9)
    assert source["lr"] != pytest.approx(start)  # the schedule did move the rates
    state = scheduler.state_dict()  # a scheduler built on the split optimizer loads it (a resume)
    SCHEDULERS[name](optimizer).load_state_dict(state)


def test_split_group_refuses_an_optimizer_without_the_scores():
    model = adapmtl.sparsify(ConvMultitask())
    optimizer = torch.optim.Adam(model.backbone.parameters(), lr=1e-3)
    with pytest.raises(SparsifyError, match="threshold_param_groups"):
        split_threshold_group(optimizer, model, 2.0)
    with pytest.raises(SparsifyError, match="target"):
        SparsifyRecipe(1.0)


def test_recipe_in_a_plain_loop_reaches_the_target():
    torch.manual_seed(0)
    recipe = SparsifyRecipe(TARGET)
    model = recipe.sparsify(ConvMultitask())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    recipe.setup_optimizer(optimizer, model, 20, attach=True)
    assert optimizer.param_groups[1] is recipe.threshold_group
    assert recipe.threshold_scale == pytest.approx(PAPER_BUDGET / (1e-3 * 20))  # constant lr over 20 steps
    x, seg, depth = _images(8)
    for step in range(1, 21):
        optimizer.zero_grad()
        _loss(model(x), seg, depth).backward()
        optimizer.step()
        recipe.step(step)
    assert recipe.step(20) is None  # once per step
    assert abs(recipe.last_report.overall - TARGET) <= CONTROLLER_TOLERANCE
    assert float(recipe.controller.gradient_scale) > 0
    state = recipe.state_dict()
    assert state["last_step"] == 20 and state["controller"]["measurements"] == 3
    report = recipe.finalize_model(model)
    assert abs(report.after.overall - TARGET) <= TARGET_TOLERANCE and abs(_sparsity(model) - TARGET) <= TARGET_TOLERANCE


# --- plain_state_dict -------------------------------------------------------------------------------------
def _trained_sparse(**options) -> nn.Module:
    torch.manual_seed(0)
    model = adapmtl.sparsify(ConvMultitask(), init=-3.0, **options)
    with torch.no_grad():
        model.adapmtl_thresholds.scores.copy_(torch.linspace(-2.5, -1.5, model.adapmtl_thresholds.scores.numel()))
    return model


def test_plain_state_dict_loads_strictly_and_gives_the_same_outputs():
    model = _trained_sparse()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = ConvMultitask()
    plain.load_state_dict(plain_state_dict(model), strict=True)
    _same_outputs(model, plain)
    assert 0.3 < _sparsity(plain) < 0.95 and _sparsity(plain) == pytest.approx(adapmtl.sparsity_report(model).overall)
    after = model.state_dict()  # the model is not modified
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert adapmtl.threshold_parameters(model)


def test_plain_state_dict_of_a_checkpoint_with_a_plain_template_and_prefix():
    model = _trained_sparse(granularity="layer", exclude=["heads.seg"])
    checkpoint = {f"net.{k}": v for k, v in model.state_dict().items()} | {"criterion.weight": torch.ones(3)}
    plain = ConvMultitask()
    state = plain_state_dict(plain, checkpoint, prefix="net.", granularity="layer", exclude=["heads.seg"])
    assert set(state) == set(plain.state_dict())
    plain.load_state_dict(state, strict=True)
    _same_outputs(model, plain)
    assert torch.equal(plain.heads.seg.weight, model.heads.seg.weight)  # excluded: dense, passed through
    with pytest.raises(SparsifyError, match="same components"):  # sparsified otherwise than in training
        plain_state_dict(ConvMultitask(), checkpoint, prefix="net.")
    with pytest.raises(SparsifyError, match="prefix"):
        plain_state_dict(ConvMultitask(), checkpoint, granularity="layer", exclude=["heads.seg"])
    with pytest.raises(SparsifyError, match="not sparsified"):
        plain_state_dict(ConvMultitask())
    with pytest.raises(SparsifyError, match="already sparsified"):
        plain_state_dict(model, granularity="layer")


class AttentionMultitask(nn.Module):
    """A Linear backbone with self-attention and two Linear heads."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.ModuleDict({"embed": nn.Linear(4, 8), "attn": nn.MultiheadAttention(8, 2, batch_first=True)})
        self.heads = nn.ModuleDict({"a": nn.Linear(8, 1), "b": nn.Linear(8, 2)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.backbone["embed"](x)
        h = self.backbone["attn"](h, h, h, need_weights=False)[0]
        return {t: head(h) for t, head in self.heads.items()}


def test_plain_state_dict_of_attention_projections():
    torch.manual_seed(0)
    model = adapmtl.sparsify(AttentionMultitask(), init=-2.0).eval()
    state = plain_state_dict(model)
    assert "backbone.attn.in_proj_weight" in state and int((state["backbone.attn.in_proj_weight"] == 0).sum()) > 0
    plain = AttentionMultitask().eval()
    plain.load_state_dict(state, strict=True)
    x = torch.randn(2, 5, 4)
    with torch.no_grad():
        for task, out in model(x).items():
            torch.testing.assert_close(plain(x)[task], out, rtol=0, atol=1e-6)


# --- Lightning ------------------------------------------------------------------------------------------
def _lightning_module(L, schedule: bool):
    class Lit(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = ConvMultitask()

        def training_step(self, batch, batch_idx):
            x, seg, depth = batch
            return _loss(self.net(x), seg, depth)

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.parameters(), lr=1e-3, betas=(0.5, 0.999), weight_decay=1e-4)
            if not schedule:
                return optimizer
            scheduler = lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    torch.manual_seed(0)
    return Lit()


def _lightning_trainer(L, callbacks, max_steps, **kwargs):
    return L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, callbacks=callbacks, **kwargs)


def _loader():
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*_images()), batch_size=8)


def test_lightning_fit_reaches_the_target_and_its_checkpoint_loads_into_the_plain_model(tmp_path):
    L = pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import ModelCheckpoint
    from adapmtl.integrations.lightning import LOG_NAME, AdapMTLCallback

    lit = _lightning_module(L, schedule=True)
    callback = AdapMTLCallback(TARGET, module="net", lr_step=5, lr_gamma=0.5)  # the StepLR below, for "auto"
    saver = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=20, save_top_k=-1)
    trainer = _lightning_trainer(L, [callback, saver], 20)
    trainer.fit(lit, _loader())

    optimizer = trainer.optimizers[0]
    groups = [g for g in optimizer.param_groups if g.get("role") == THRESHOLD_ROLE]
    assert len(groups) == 1 and len(optimizer.param_groups) == 2
    assert len(groups[0]["params"]) == 1 and groups[0]["params"][0].numel() == 3  # backbone, seg, depth
    k = threshold_lr_scale(1e-3, 5, 0.5, 20)  # 7.75 / Σ lr of this StepLR run
    assert k > 100 and callback.threshold_scale == pytest.approx(k)
    assert groups[0]["lr"] == pytest.approx(k * optimizer.param_groups[0]["lr"])  # after the StepLR's decay too
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5 ** 4)
    assert groups[0]["weight_decay"] == 1e-4 and groups[0]["betas"] == (0.5, 0.999)
    assert abs(callback.last_report.overall - TARGET) <= CONTROLLER_TOLERANCE  # measured at step 20
    assert float(trainer.callback_metrics[LOG_NAME]) == pytest.approx(callback.last_report.overall)
    assert callback.controller.measurements == 3  # steps 1, 11 and the last
    assert float(callback.controller.gradient_scale) > 0  # the pressure ran on the real gradient, once a step

    # finalized at the end of fit: plain Conv2d layers, exactly the target
    assert callback.finalize_report.target == TARGET
    assert abs(callback.finalize_report.after.overall - TARGET) <= TARGET_TOLERANCE
    assert set(lit.net.state_dict()) == set(ConvMultitask().state_dict())
    assert _sparsity(lit.net) == pytest.approx(callback.finalize_report.after.overall)
    assert "configure_optimizers" not in vars(lit)  # the wrapper is gone after the fit

    # the checkpoint written at step 20 (sparsified) -> the plain class, strictly; same outputs as the
    # sparsified model it holds
    (path,) = tmp_path.glob("*.ckpt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    plain = ConvMultitask()
    plain.load_state_dict(callback.plain_state_dict(plain, checkpoint["state_dict"], prefix="net."), strict=True)
    sparse = adapmtl.sparsify(ConvMultitask(), **callback.sparsify_options)
    sparse.load_state_dict({k[4:]: v for k, v in checkpoint["state_dict"].items()})
    _same_outputs(sparse, plain)
    assert abs(_sparsity(plain) - TARGET) <= CONTROLLER_TOLERANCE


def test_lightning_resume_restores_optimizer_groups_and_controller(tmp_path):
    L = pytest.importorskip("lightning")
    from adapmtl.integrations.lightning import AdapMTLCallback

    options = {"module": "net", "total_steps": 30, "finalize": False}
    lit = _lightning_module(L, schedule=False)
    first = AdapMTLCallback(TARGET, **options)
    trainer = _lightning_trainer(L, [first], 16, enable_checkpointing=False)  # two epochs of 8 batches
    trainer.fit(lit, _loader())
    assert first.controller.measurements == 2  # steps 1 and 11 of 30
    trainer.save_checkpoint(tmp_path / "mid.ckpt")

    # the checkpoint of the live, sparsified model -> the plain class: same outputs, exactly
    checkpoint = torch.load(tmp_path / "mid.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["callbacks"]["AdapMTLCallback"]["last_step"] == 16
    plain = ConvMultitask()
    plain.load_state_dict(plain_state_dict(plain, checkpoint["state_dict"], prefix="net."), strict=True)
    _same_outputs(lit.net, plain)

    resumed = _lightning_module(L, schedule=False)
    second = AdapMTLCallback(TARGET, **options)
    trainer = _lightning_trainer(L, [second], 30, enable_checkpointing=False)
    trainer.fit(resumed, _loader(), ckpt_path=tmp_path / "mid.ckpt")  # optimizer state with the split group loads
    assert second.controller.measurements == 4  # 2 restored + steps 21 and 30
    assert second.last_step == 30 and abs(second.last_report.overall - TARGET) <= CONTROLLER_TOLERANCE
    groups = trainer.optimizers[0].param_groups
    assert [g.get("role") for g in groups] == [None, THRESHOLD_ROLE]
    assert groups[1]["lr"] == pytest.approx(1e-3 * PAPER_BUDGET / (1e-3 * 30))  # constant lr over 30 steps
    assert trainer.optimizers[0].state[groups[1]["params"][0]]["step"] == 30  # Adam's state came back


# --- Hugging Face Trainer ---------------------------------------------------------------------------------
class HFConvMultitask(ConvMultitask):
    """The toy model as a Trainer wants it: keyword inputs, a "loss" output."""

    def forward(self, image, seg=None, depth=None):
        outputs = super().forward(image)
        if seg is not None:
            outputs["loss"] = _loss(outputs, seg, depth)
        return outputs


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.image, self.seg, self.depth = _images()

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, i):
        return {"image": self.image[i], "seg": self.seg[i], "depth": self.depth[i]}


def _hf_trainer(transformers, output_dir, max_steps, save_steps):
    args = transformers.TrainingArguments(
        str(output_dir), max_steps=max_steps, per_device_train_batch_size=8, learning_rate=1e-3,
        weight_decay=1e-4, report_to=[], use_cpu=True, save_strategy="steps", save_steps=save_steps,
        logging_strategy="no", remove_unused_columns=False, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    torch.manual_seed(0)
    return transformers.Trainer(model=HFConvMultitask(), args=args, train_dataset=ImageDataset())


def test_transformers_trainer_reaches_the_target_and_its_checkpoint_loads_into_the_plain_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from safetensors.torch import load_file
    from adapmtl.integrations.transformers import STATE_FILE, AdapMTLTrainerCallback

    trainer = _hf_trainer(transformers, tmp_path, 20, 20)
    callback = AdapMTLTrainerCallback(TARGET).attach(trainer)
    assert adapmtl.threshold_parameters(trainer.model)  # sparsified by attach, before train() builds the optimizer
    trainer.train()

    groups = trainer.optimizer.param_groups
    thresholds = [g for g in groups if g.get("role") == THRESHOLD_ROLE]
    assert len(thresholds) == 1 and len(thresholds[0]["params"]) == 1 and len(groups) == 3
    source = groups[0]  # the Trainer's weight-decay group, where the scores were
    assert thresholds[0]["weight_decay"] == source["weight_decay"] == 1e-4
    k = PAPER_BUDGET / sum(1e-3 * (20 - t) / 20 for t in range(20))  # the Trainer's linear decay, read
    assert callback.threshold_scale == pytest.approx(k)
    assert thresholds[0]["initial_lr"] == pytest.approx(k * source["initial_lr"])
    assert trainer.lr_scheduler.base_lrs[-1] == pytest.approx(k * trainer.lr_scheduler.base_lrs[0])
    assert abs(callback.last_report.overall - TARGET) <= CONTROLLER_TOLERANCE
    assert float(callback.controller.gradient_scale) > 0  # the pressure ran in the optimizer's step pre-hook
    assert abs(callback.finalize_report.after.overall - TARGET) <= TARGET_TOLERANCE
    assert set(trainer.model.state_dict()) == set(ConvMultitask().state_dict())  # finalized: plain layers

    folder = tmp_path / "checkpoint-20"
    assert (folder / STATE_FILE).is_file()
    state = load_file(str(folder / "model.safetensors"))
    plain = ConvMultitask()  # the plain class: HFConvMultitask's parameters are ConvMultitask's
    plain.load_state_dict(callback.plain_state_dict(plain, state), strict=True)
    sparse = adapmtl.sparsify(ConvMultitask(), **callback.sparsify_options)
    sparse.load_state_dict(state)
    _same_outputs(sparse, plain)
    assert abs(_sparsity(plain) - TARGET) <= CONTROLLER_TOLERANCE


def test_transformers_resume_restores_optimizer_groups_and_controller(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from adapmtl.integrations.transformers import AdapMTLTrainerCallback

    first = _hf_trainer(transformers, tmp_path, 20, 10)
    callback = AdapMTLTrainerCallback(TARGET, finalize=False).attach(first)
    first.train()
    assert callback.controller.measurements == 3  # steps 1, 11 and 20

    second = _hf_trainer(transformers, tmp_path, 20, 10)
    resumed = AdapMTLTrainerCallback(TARGET, finalize=False).attach(second)
    second.train(resume_from_checkpoint=str(tmp_path / "checkpoint-10"))  # optimizer state with the new group loads
    assert resumed.controller.measurements == 3  # step 1 restored from checkpoint-10, then 11 and 20
    assert resumed.last_step == 20 and abs(resumed.last_report.overall - TARGET) <= CONTROLLER_TOLERANCE
    assert resumed.threshold_scale == pytest.approx(callback.threshold_scale)
    scores = adapmtl.threshold_parameters(second.model)[0]
    assert second.optimizer.state[scores]["step"] == 20


def test_transformers_callback_without_attach_is_refused(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from adapmtl.integrations.transformers import AdapMTLTrainerCallback

    trainer = _hf_trainer(transformers, tmp_path, 2, 10)
    trainer.add_callback(AdapMTLTrainerCallback(TARGET))
    with pytest.raises(SparsifyError, match=r"attach\(trainer\)"):
        trainer.train()


def test_lightning_auto_scale_refuses_a_schedule_it_cannot_read(tmp_path):
    L = pytest.importorskip("lightning")
    from adapmtl.integrations.lightning import AdapMTLCallback

    lit = _lightning_module(L, schedule=True)  # a StepLR, but the callback is not told its lr_step: unreadable
    trainer = _lightning_trainer(L, [AdapMTLCallback(TARGET, module="net")], 4, default_root_dir=tmp_path)
    with pytest.raises(SparsifyError, match="reads the threshold budget .* not from StepLR: set threshold_lr_scale"):
        trainer.fit(lit, _loader())
    lit = _lightning_module(L, schedule=True)
    trainer = _lightning_trainer(L, [AdapMTLCallback(TARGET, module="net", threshold_lr_scale=10.0)], 4,
                                 default_root_dir=tmp_path)
    trainer.fit(lit, _loader())  # a hand-set k needs no reading


def test_transformers_refuses_a_second_callback_on_one_trainer(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from adapmtl.integrations.transformers import AdapMTLTrainerCallback

    trainer = _hf_trainer(transformers, tmp_path, 4, 4)
    AdapMTLTrainerCallback(TARGET).attach(trainer)
    with pytest.raises(SparsifyError, match="already has an AdapMTLTrainerCallback attached"):
        AdapMTLTrainerCallback(0.5, granularity="global").attach(trainer)
