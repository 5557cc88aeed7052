"""Hugging Face integration: `AdapMTLTrainerCallback` sparsifies, steers and finalizes a `Trainer`'s model.

    from transformers import Trainer, TrainingArguments
    from adapmtl.integrations.transformers import AdapMTLTrainerCallback

    trainer = Trainer(model=model, args=TrainingArguments("out", max_steps=20_000), train_dataset=data)
    callback = AdapMTLTrainerCallback(target=0.9).attach(trainer)   # after Trainer(...), before train()
    trainer.train()                                                 # the model is finalized at the end
    print(callback.finalize_report)

    # a checkpoint written during training, into the plain model class:
    net = MyModel()
    state = safetensors.torch.load_file("out/checkpoint-500/model.safetensors")
    net.load_state_dict(callback.plain_state_dict(net, state))

Needs transformers with accelerate (`pip install "adapmtl[transformers]"`). AdapMTL (ACM MM 2024);
docs/method.md §1-2.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn

try:
    from transformers import TrainerCallback
except ImportError as error:  # the extra is optional: `import adapmtl` never needs it
    raise ImportError(
        'adapmtl.integrations.transformers needs Hugging Face transformers: pip install "adapmtl[transformers]"'
        f" (import failed: {error})"
    ) from error

from adapmtl.errors import SparsifyError
from adapmtl.integrations.optim import threshold_group_index
from adapmtl.integrations.recipe import SparsifyRecipe
from adapmtl.sparsity.bank import find_bank

STATE_FILE = "adapmtl_controller.pt"
"""The file in each `checkpoint-<step>` folder that holds the controller's state, for resuming."""


class AdapMTLTrainerCallback(SparsifyRecipe, TrainerCallback):
    """A Hugging Face `TrainerCallback` that trains a `Trainer`'s model with AdapMTL soft thresholds
    (one learnable threshold per component; Xiang et al., ACM MM 2024) and adapmtl's exact-target
    controller (docs/method.md §2).

    The order that works: build the `Trainer`, then `callback.attach(trainer)`, then `trainer.train()`.
    `attach` sparsifies `trainer.model` in place (the Trainer builds its optimizer inside `train()`,
    from the model's parameters then, so the threshold scores are in it) and hooks the Trainer's
    `create_scheduler`, which `train()` calls after the optimizer exists and before it loads a
    checkpoint's optimizer state (`resume_from_checkpoint`): there the scores move to an optimizer
    group of their own with the library's learning-rate rule (`SparsifyRecipe`: the weights' lr × k,
    k = max(1, 7.75 / Σ lr of the run), Σ read from the Trainer's schedule, e.g. its default linear
    decay), the scheduler is kept consistent (their lr stays k × the weights' at every step) and the
    `SparsityController` is built with total_steps = the recipe's, else the Trainer's `max_steps`. Its
    pressure runs in the optimizer's step pre-hook (after gradient clipping and accumulation, on the
    unscaled gradient: as in adapmtl's engine); `controller.step(global_step)` after every optimizer
    step (`on_step_end`); with `finalize=True`, `adapmtl.finalize(model, target)` at `on_train_end`
    (`self.finalize_report`). Each checkpoint folder gets `adapmtl_controller.pt`, read back when
    training resumes from a checkpoint of the run's `output_dir`.

    Passing the callback in `Trainer(callbacks=[...])` without `attach` is an error at `on_train_begin`
    (the optimizer exists by then, without a group for thresholds that did not exist). Not supported:
    `model_init` (the model is rebuilt inside `train()`), DeepSpeed (it builds its own optimizer).

    Checkpoints written during training hold the sparsified state_dict (`model.safetensors`):
    `plain_state_dict(model, state_dict)` turns one into the plain model's (Ŵ, exact zeros).

    Args:
        target: the overall sparsity to reach, in [0, 1).
        **options: the knobs of `SparsifyRecipe`: components, exclude, granularity, init ("auto"),
            min_density, embeddings, parameters (as `adapmtl.sparsify`); policy, reach_at, schedule, tolerance,
            interval, slack, total_steps (as `SparsityController`); threshold_lr, threshold_lr_scale,
            lr_step, lr_gamma, threshold_weight_decay; finalize (True).

    Raises:
        SparsifyError: an invalid option; (at `on_train_begin`) the callback was not attached.
    """

    def __init__(self, target: float, **options: Any) -> None:
        SparsifyRecipe.__init__(self, target, **options)
        self.model: nn.Module | None = None

    def attach(self, trainer: Any) -> "AdapMTLTrainerCallback":
        """Sparsify `trainer.model` in place, hook the trainer's `create_scheduler` (see the class doc)
        and add this callback to it; returns self. Call it after `Trainer(...)` and before `train()`.

        Raises:
            SparsifyError: the trainer has an optimizer without the threshold scores (built before the
                model was sparsified), uses `model_init`, already has another AdapMTLTrainerCallback, or
                as `adapmtl.sparsify`.
            ComponentError: layers that cannot be assigned to components.
        """
        if getattr(trainer, "model_init", None) is not None:
            raise SparsifyError("AdapMTLTrainerCallback does not support Trainer(model_init=...): train() rebuilds the "
                                "model after attach has sparsified it; pass the model itself")
        others = [c for c in trainer.callback_handler.callbacks if isinstance(c, AdapMTLTrainerCallback) and c is not self]
        if others:  # two controllers would fight over one set of thresholds, the second with the first's layout
            raise SparsifyError("this Trainer already has an AdapMTLTrainerCallback attached: one per Trainer "
                                "(its thresholds, controller and target are the model's)")
        model = self.sparsify(trainer.model)
        if getattr(trainer, "optimizer", None) is not None and threshold_group_index(trainer.optimizer, model) is None:
            raise SparsifyError("the Trainer's optimizer was built before the model was sparsified, so it does not "
                                "hold the threshold scores: attach the callback before trainer.train(), and pass "
                                "no optimizer built from the dense model in Trainer(optimizers=...)")
        self.model = model
        original = trainer.create_scheduler  # the bound method of the Trainer's class

        def create_scheduler(num_training_steps: int, optimizer: Any = None) -> Any:
            scheduler = original(num_training_steps=num_training_steps, optimizer=optimizer)
            optimizer = optimizer if optimizer is not None else trainer.optimizer
            if find_bank(model) is not None:  # not after a finalize (a second train() trains the plain model)
                self._setup(optimizer, model, num_training_steps, scheduler)
            return scheduler

        create_scheduler.__doc__ = original.__doc__
        trainer.create_scheduler = create_scheduler
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        return self

    def _setup(self, optimizer: Any, model: nn.Module, total_steps: int, scheduler: Any) -> None:
        index = threshold_group_index(optimizer, model)
        lr_lambda = None
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR) and index is not None:
            lr_lambda = scheduler.lr_lambdas[index]  # the Trainer's schedules step once per optimizer step
        self.setup_optimizer(optimizer, model, total_steps, schedulers=[scheduler], lr_lambda=lr_lambda, attach=True)

    # --- TrainerCallback events -----------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.model is None:
            raise SparsifyError("AdapMTLTrainerCallback must be attached before training: "
                                "callback = AdapMTLTrainerCallback(target=...).attach(trainer); trainer.train()")
        if self.controller is None or state.global_step == 0:
            return
        path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", STATE_FILE)
        if os.path.isfile(path):
            self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        else:
            self.last_step = state.global_step
            warnings.warn(f"resuming at step {state.global_step} without {path}: the sparsity controller starts "
                          "afresh (its pressure from zero); the sparsity path and target are unchanged", stacklevel=2)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.controller is not None:
            self.step(state.global_step)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if self.controller is not None and state.is_world_process_zero and os.path.isdir(folder):
            torch.save(self.state_dict(), os.path.join(folder, STATE_FILE))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.finalize and self.model is not None and find_bank(self.model) is not None:
            self.finalize_model(self.model)
