"""Lightning integration: `AdapMTLCallback` sparsifies, steers and finalizes a LightningModule's model.

    import lightning as L
    from adapmtl.integrations.lightning import AdapMTLCallback

    callback = AdapMTLCallback(target=0.9, module="net")     # the LightningModule's self.net
    trainer = L.Trainer(max_steps=20_000, callbacks=[callback])
    trainer.fit(lit)                                         # lit.net is finalized at the end: real zeros
    print(callback.finalize_report)

    # a checkpoint written during training, into the plain model class:
    net = Net()
    net.load_state_dict(callback.plain_state_dict(net, torch.load(path, weights_only=True)["state_dict"],
                                                  prefix="net."))

Needs Lightning 2 (`pip install "adapmtl[lightning]"`). AdapMTL (ACM MM 2024); docs/method.md §1-2.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch import nn

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
except ImportError as error:  # the extra is optional: `import adapmtl` never needs it
    raise ImportError(
        'adapmtl.integrations.lightning needs Lightning (the "lightning" package): pip install "adapmtl[lightning]"'
        f" (import failed: {error})"
    ) from error

from adapmtl.errors import SparsifyError
from adapmtl.integrations.optim import threshold_group_index, unwrap_optimizer
from adapmtl.integrations.recipe import SparsifyRecipe
from adapmtl.sparsity.bank import find_bank

LOG_NAME = "adapmtl/sparsity"
"""The name under which the callback logs the overall sparsity at each of the controller's measurements."""


class AdapMTLCallback(SparsifyRecipe, Callback):
    """A Lightning callback that trains a LightningModule's model with AdapMTL soft thresholds
    (one learnable threshold per component; Xiang et al., ACM MM 2024) and adapmtl's exact-target
    controller (docs/method.md §2).

    What it does, hook by hook (fit only; validate/test/predict are left alone):

    * `setup`: sparsifies the model (`adapmtl.sparsify` with the recipe's options) in place, before
      Lightning restores a checkpoint (`fit(ckpt_path=...)`) and before `configure_optimizers`, so the
      optimizer that `configure_optimizers` builds from `self.parameters()` holds the threshold scores.
    * `configure_optimizers` (wrapped for the duration of the fit): after the module's own, the scores
      move to an optimizer group of their own with the library's learning-rate rule (`SparsifyRecipe`,
      `adapmtl.integrations.optim.threshold_lr`: the weights' lr × k, k = max(1, 7.75 / Σ lr of the run)),
      the LR schedulers it returned are kept consistent (the scores' lr stays k × their source group's),
      and the `SparsityController` is built with `total_steps` = the recipe's, else Lightning's
      `estimated_stepping_batches` (max_steps, or epochs × batches / accumulation). A "step"-interval
      LambdaLR is read for "auto"; for other schedules give `lr_step`/`lr_gamma` or `threshold_lr_scale`.
      Scores that already have a group of their own (`adapmtl.integrations.threshold_param_groups`) are
      left as built.
    * `on_before_optimizer_step`: the controller's pressure, once per optimizer step, on the final
      (accumulated, DDP-averaged, AMP-unscaled) gradient of the scores.
    * `on_train_batch_end`: `controller.step(global_step)` after each optimizer step; the overall
      sparsity is logged as "adapmtl/sparsity" when the controller measured (`log=True`).
    * `on_fit_end`: with `finalize=True`, `adapmtl.finalize(model, target)`: ordinary layers with real
      zeros, exactly `target` within ±0.0005 (`self.finalize_report`).
    * `state_dict`/`load_state_dict`: the controller's state travels in Lightning checkpoints, so
      `fit(ckpt_path=...)` resumes it exactly.

    Checkpoints written during the fit hold the sparsified state_dict; `plain_state_dict(model,
    checkpoint["state_dict"], prefix=...)` turns one into the plain model's (Ŵ, exact zeros).

    Args:
        target: the overall sparsity to reach, in [0, 1).
        module: the attribute path of the model inside the LightningModule ("net", "model.backbone_net");
            None: the LightningModule itself. It must exist when the LightningModule is constructed.
        log: log the overall sparsity at each measurement.
        **options: the knobs of `SparsifyRecipe`: components, exclude, granularity, init ("auto"),
            min_density, embeddings, parameters (as `adapmtl.sparsify`); policy, reach_at, schedule, tolerance,
            interval, slack, total_steps (as `SparsityController`); threshold_lr, threshold_lr_scale,
            lr_step, lr_gamma, threshold_weight_decay; finalize (True).

    Raises:
        SparsifyError: an invalid option; at `setup`, a `module` path that names no nn.Module; at
            `configure_optimizers`, no optimizer holds the scores, or the run's length is unknown
            (max_epochs=-1 without max_steps: give `total_steps`).
        ComponentError: (at `setup`) layers that cannot be assigned to components.
    """

    def __init__(self, target: float, *, module: str | None = None, log: bool = True, **options: Any) -> None:
        SparsifyRecipe.__init__(self, target, **options)
        self.module = module
        self.log_sparsity = bool(log)
        self._wrapped: pl.LightningModule | None = None

    def model_of(self, pl_module: pl.LightningModule) -> nn.Module:
        """The module this callback sparsifies: `pl_module` itself, or its attribute path `module`.

        Raises SparsifyError when the path names no nn.Module."""
        model: Any = pl_module
        for part in (self.module.split(".") if self.module else ()):
            model = getattr(model, part, None)
        if not isinstance(model, nn.Module):
            raise SparsifyError(f"AdapMTLCallback(module={self.module!r}): {type(pl_module).__name__} has no submodule "
                                f"{self.module!r} at setup; build the model in the LightningModule's __init__")
        return model

    # --- Lightning hooks ---------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        model = self.sparsify(self.model_of(pl_module))
        original = pl_module.configure_optimizers  # the bound method of the module's class

        def configure_optimizers() -> Any:
            configured = original()
            self._configure(trainer, model, configured)
            return configured

        configure_optimizers.__doc__ = original.__doc__
        pl_module.configure_optimizers = configure_optimizers  # an instance attribute; removed at teardown
        self._wrapped = pl_module

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self._wrapped is pl_module and "configure_optimizers" in vars(pl_module):
            del pl_module.configure_optimizers
            self._wrapped = None

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.holds_thresholds(optimizer):
            self.press()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.controller is None or trainer.global_step <= self.last_step:
            return  # gradient accumulation: no optimizer step in this batch
        report = self.step(trainer.global_step)
        if report is not None and self.log_sparsity:
            pl_module.log(LOG_NAME, report.overall, on_step=True, on_epoch=False, batch_size=1)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = self.model_of(pl_module)
        if self.finalize and find_bank(model) is not None:
            self.finalize_model(model)

    # --- the optimizer ---------------------------------------------------------------------------------
    def _configure(self, trainer: pl.Trainer, model: nn.Module, configured: Any) -> None:
        """The scores' group, the schedulers' consistency and the controller, on what configure_optimizers returned."""
        optimizers = list(_optimizers(configured))
        holder = next((o for o in optimizers if threshold_group_index(o, model) is not None), None)
        if holder is None:
            raise SparsifyError(
                "no optimizer returned by configure_optimizers holds the threshold scores, so the thresholds would "
                "never learn: build it from self.parameters() (the callback sparsifies the model in setup, before "
                "configure_optimizers), or from adapmtl.integrations.threshold_param_groups(self, lr, total_steps)")
        total = self.total_steps
        if total is None:
            total = trainer.estimated_stepping_batches
            if not math.isfinite(total) or total < 1:
                raise SparsifyError(f"the run's number of optimizer steps is unknown ({total}): set max_steps or "
                                    "max_epochs on the Trainer, or total_steps on AdapMTLCallback")
        schedulers = list(_schedulers(configured))
        index = threshold_group_index(holder, model)
        lr_lambda = next((s.lr_lambdas[index] for s, interval, frequency in schedulers
                          if isinstance(s, torch.optim.lr_scheduler.LambdaLR) and interval == "step" and frequency == 1
                          and unwrap_optimizer(s.optimizer) is unwrap_optimizer(holder)), None)
        rule = self.lr_options
        unread = [type(s).__name__ for s, _, _ in schedulers if unwrap_optimizer(s.optimizer) is unwrap_optimizer(holder)]
        if lr_lambda is None and unread and rule["scale"] == "auto" and rule["threshold_lr"] is None \
                and rule["lr_step"] is None:  # "auto" would take the schedule's current lr as constant: silently off
            raise SparsifyError(f"threshold_lr_scale='auto' reads the threshold budget (Σ lr) from a per-step LambdaLR "
                                f"or a StepLR given as lr_step/lr_gamma, not from {', '.join(unread)}: set "
                                "threshold_lr_scale (k; docs/method.md §2), or lr_step and lr_gamma, on AdapMTLCallback")
        self.setup_optimizer(holder, model, int(total), schedulers=[s for s, _, _ in schedulers], lr_lambda=lr_lambda)


def _optimizers(configured: Any) -> Iterator[torch.optim.Optimizer]:
    """Every optimizer in what configure_optimizers may return (an optimizer, lists, tuples, dicts)."""
    if isinstance(configured, torch.optim.Optimizer):
        yield configured
    elif isinstance(configured, dict):
        if "optimizer" in configured:
            yield from _optimizers(configured["optimizer"])
    elif isinstance(configured, (list, tuple)):
        for item in configured:
            yield from _optimizers(item)


def _schedulers(configured: Any) -> Iterator[tuple[Any, str, int]]:
    """(scheduler, interval, frequency) for every LR scheduler in what configure_optimizers may return
    (Lightning's defaults: interval "epoch", frequency 1)."""
    if isinstance(configured, dict):
        if "scheduler" in configured:
            yield configured["scheduler"], configured.get("interval", "epoch"), int(configured.get("frequency", 1))
        elif "lr_scheduler" in configured:
            yield from _schedulers(configured["lr_scheduler"])
    elif isinstance(configured, (list, tuple)):
        for item in configured:
            yield from _schedulers(item)
    elif hasattr(configured, "optimizer") and hasattr(configured, "step") and not isinstance(
            configured, torch.optim.Optimizer):
        yield configured, "epoch", 1
