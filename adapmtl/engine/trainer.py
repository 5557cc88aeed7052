"""The training loop: one run of one method, from config to finalized model and results.

    result = train(load_config("configs/quickstart.yaml"))

Read top to bottom: build (data, model, method, optimizer), maybe resume, then the
step loop (loss → weighting → backward → step → method), validation with model
selection, checkpoints, and at the end finalize + test evaluation.
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import adapmtl.sparsity as sparsity
from adapmtl.engine.checkpoint import (CheckpointError, config_differences, load_checkpoint, load_model_state,
                                      rng_state, save_atomic, set_rng_state)
from adapmtl.engine.config import Config, ConfigError
from adapmtl.engine.data import build_dataset, build_tasks, eval_loader, train_loader
from adapmtl.engine.distributed import Distributed, all_reduce_mean, all_reduce_sum, barrier, collectives, setup
from adapmtl.engine.evaluate import evaluate, move
from adapmtl.engine.interrupt import interrupt_between_steps
from adapmtl.engine.logger import RunLogger, run_warnings
from adapmtl.engine.rundir import RunDir, RunDirError, read_state
from adapmtl.engine.runlock import lock_run_dir, raise_if_busy
from adapmtl.errors import AdapMTLError
from adapmtl.methods import Method, MethodContext, create_method
from adapmtl.models.outputs import task_outputs
from adapmtl.models.spec import ModelSpec
from adapmtl.sparsity.budget import threshold_lr
from adapmtl.weighting import TaskWeighting, create_weighting

class NonFiniteLossError(AdapMTLError, RuntimeError):
    """A task loss became NaN or infinite; the run stopped before applying that step."""


@dataclass
class Run:
    """Everything one training run holds while it trains."""

    config: Config
    run_dir: Path
    env: Distributed
    model: nn.Module  # the model itself (unwrapped)
    trained: nn.Module  # what forward is called on: the model, or its DDP wrapper
    method: Method
    tasks: dict
    weighting: TaskWeighting
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    autocast: Any
    datasets: dict
    spec: ModelSpec  # how to rebuild the model and what of it is pruned (recorded with the finalized model)
    step: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"step": None, "val_loss": math.inf})

    @property
    def folder(self) -> RunDir:
        return RunDir(self.run_dir)

    def sparsity_report(self) -> sparsity.SparsityReport:
        """The model's sparsity over the weights this run prunes (its spec's scope)."""
        return sparsity.sparsity_report(self.model, **self.spec.scope.arguments())


LARGE_TRIM = 0.01
"""A final trim that moves the overall sparsity by more than this (1 pp) is a warning: the controller
holds ±0.5 pp from reach_at on (docs/method.md §2), so a larger trim means the run was too short for it."""


def _check_outputs(model: nn.Module, dataset, tasks: list[str], device: torch.device) -> None:
    """One forward pass on one training image (eval mode, no gradient: nothing changes) so that a model
    whose outputs do not fit the tasks fails before the run folder is written.
    Raises ModelError as `task_outputs` does."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            task_outputs(model(dataset[0]["image"][None].to(device)), tasks)
    finally:
        model.train(was_training)


def _load_dense_weights(model: nn.Module, path: str) -> None:
    """Load a dense state dict from a run folder (its finalized model), a .safetensors or a .pt file.

    Raises ConfigError naming `train.init_from` and the file when it is missing, damaged,
    of another kind, or does not fit the configured model."""
    source = Path(path)
    if source.is_dir():
        source = RunDir(source).model_file
    if not source.is_file():
        raise ConfigError(f"`train.init_from`: {source} does not exist")
    try:
        if source.suffix == ".safetensors":
            state = read_state(source)
        elif source.suffix == ".pt":
            state = load_checkpoint(source)["model"]
        else:
            raise ConfigError(f"`train.init_from`: {source} is neither .safetensors nor .pt")
        load_model_state(model, state, source)
    except (RunDirError, CheckpointError) as error:
        raise ConfigError(f"`train.init_from`: {error} (a dense model of the same architecture, width and tasks "
                          "is needed; a sparsified checkpoint is not one)") from None


def _autocast(config: Config, device: torch.device):
    """Mixed precision: bf16 on GPU by default (no loss scaling needed), off on CPU."""
    mode = config.train.amp
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" else "off"
    if mode == "off":
        return nullcontext, None
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None
    return partial(torch.autocast, device_type=device.type, dtype=dtype), scaler


def build_run(config: Config, run_dir: Path, env: Distributed) -> Run:
    torch.manual_seed(config.seed)
    datasets = {split: build_dataset(config, split) for split in ("train", "val", "test")}
    tasks = build_tasks(config, datasets["train"])
    spec = ModelSpec.from_options(config.model, datasets["train"].task_channels)
    model = spec.build()
    if config.train.init_from:
        _load_dense_weights(model, config.train.init_from)
    method = create_method(config.method, config.train.steps, spec.scope)
    method.prepare(model)
    if env.enabled and env.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BN over the global batch, as on one GPU
    model.to(env.device)
    _check_outputs(model, datasets["train"], list(tasks), env.device)
    trained = model
    if env.enabled:
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[env.device] if env.device.type == "cuda" else None)
    t = config.train
    optimizer = torch.optim.Adam(_param_groups(method, model, t), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=t.lr_step, gamma=t.lr_gamma)
    controller = getattr(method, "controller", None)  # the soft-threshold methods' SparsityController
    if controller is not None:
        controller.attach(optimizer)  # its pressure on the averaged, accumulated, unscaled gradient, once a step
    weighting = create_weighting(method.weighting, list(tasks), t.steps,
                                 convention=config.convention,
                                 **config.method.weighting_options)
    autocast, scaler = _autocast(config, env.device)
    train_loader(config, datasets["train"], 0, env.rank, env.world_size)  # checks the batch against the data
    method.bind(_method_context(config, env, tasks, datasets["train"], optimizer, scheduler))
    return Run(config, run_dir, env, model, trained, method, tasks, weighting, optimizer, scheduler, scaler,
               autocast, datasets, spec)


def _param_groups(method: Method, model: nn.Module, t) -> list[dict[str, Any]]:
    """The method's optimizer groups. A group of thresholds gets the learning rate
    (train.threshold_lr or train.lr) × train.threshold_lr_scale, whose "auto" is the factor that
    gives the run the threshold budget of the paper's recipe (adapmtl.sparsity.budget; 1 when
    threshold_lr is set by hand), and train.threshold_weight_decay when set."""
    groups = method.param_groups(model)
    for group in groups:
        if group.get("role") == "thresholds":
            group["lr"] = threshold_lr(t.lr, t.steps, threshold_lr=t.threshold_lr, scale=t.threshold_lr_scale,
                                       lr_step=t.lr_step, lr_gamma=t.lr_gamma)
            if t.threshold_weight_decay is not None:
                group["weight_decay"] = t.threshold_weight_decay
    return groups


def _method_context(config: Config, env: Distributed, tasks: dict, dataset, optimizer, scheduler) -> MethodContext:
    """Training batches, task losses and the optimizer's reset, for methods that need them."""

    def batches(start: int, n: int):
        loader = train_loader(config, dataset, start, env.rank, env.world_size)
        for _, batch in zip(range(n), loader):
            yield move(batch, env.device)

    def task_losses(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = task_outputs(model(batch["image"]), list(tasks))
        return {t: task.loss(outputs[t].float(), batch[t]) for t, task in tasks.items()}

    def reset_optimizer() -> None:
        optimizer.state.clear()
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        scheduler.last_epoch = 0

    return MethodContext(batches, task_losses, partial(all_reduce_mean, env=env), reset_optimizer)


def save_checkpoint(run: Run, path: Path) -> None:
    save_atomic({
        "step": run.step,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler else None,
        "method": run.method.state_dict(),
        "weighting": run.weighting.state_dict(),
        "best": run.best,
        "rng": rng_state(),
        "world_size": run.env.world_size,  # a resume on another number of processes says what changes
        "config": run.config.model_dump(mode="json"),  # a resume with another run's checkpoint is refused
    }, path)


def restore_checkpoint(run: Run, path: Path) -> list[str]:
    """Restore the training state `save_checkpoint` wrote to `path`; returns warnings about
    what differs from the run that wrote it (another number of processes).

    Raises CheckpointError (naming `path`) when the file is missing, damaged or unreadable,
    was written with another config (naming the keys that differ), or does not fit the model.
    """
    checkpoint = load_checkpoint(path, run.env.device)
    differences = config_differences(checkpoint.get("config"), run.config.model_dump(mode="json"))
    if differences:
        raise CheckpointError(f"checkpoint {path} was written by another run or config ({'; '.join(differences)}); "
                              f"a run resumes only from its own checkpoint, with the config.yaml it started with")
    load_model_state(run.model, checkpoint["model"], path)
    try:
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        run.scheduler.load_state_dict(checkpoint["scheduler"])
        if run.scaler and checkpoint["scaler"]:
            run.scaler.load_state_dict(checkpoint["scaler"])
        run.method.load_state_dict(checkpoint["method"])
        run.weighting.load_state_dict(checkpoint["weighting"])
        run.best = checkpoint["best"]
        run.step = checkpoint["step"]
        set_rng_state(checkpoint["rng"])
    except (KeyError, ValueError, RuntimeError) as error:  # a checkpoint of another method or version
        raise CheckpointError(f"checkpoint {path} does not fit this run's training state "
                              f"({type(error).__name__}: {error})") from None
    saved, now, batch = checkpoint.get("world_size", run.env.world_size), run.env.world_size, run.config.data.batch_size
    if saved == now:
        return []
    return [f"{path} was written by a run on {saved} process(es) and resumes on {now}. Every step still reads the "
            f"same samples as one batch of data.batch_size={batch}, but each process now computes {batch // now} "
            f"of them instead of {batch // saved}: BatchNorm statistics (unless synchronized across GPUs) and "
            f"dropout draws change, so the run continues correctly but not identically to one without the change"]


def _checkpoint_hint(run: Run) -> str:
    """Where a stopped run can continue from, in words."""
    if run.folder.last.exists():
        return f"Its last checkpoint is {run.folder.last} (`adapmtl train --resume {run.run_dir}` continues from it)."
    return "No checkpoint had been written yet (train.checkpoint_every)."


def train_step(run: Run, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """One optimizer step over a global batch (in `accumulate` micro-batches); returns task losses.

    The task losses the weighting sees are the step's: each task's mean over the micro-batches (of
    every rank) with a valid pixel. When the weighting's step weights come before the step's losses
    (`uses_current_losses` False: every "corrected" weighting, and "equal"), each micro-batch's
    weighted loss is backpropagated as soon as it is computed and the losses are recorded after the
    step. When they include the step's own losses ("paper" adaptive weighting, the original's
    order), every micro-batch is first forwarded (their graphs kept: accumulation then saves no
    activation memory), the step's losses are all-reduced and given to `weights_for`, and one
    backward pass of the weighted sum follows.

    Raises NonFiniteLossError (before the step is applied, and before the weighting records
    anything) if a task's loss is NaN or infinite, and DistributedError if another rank stops answering."""
    accumulate = run.config.train.accumulate
    current = run.weighting.uses_current_losses

    def weight_vector(weights: dict[str, float]) -> torch.Tensor:
        return torch.tensor([weights[t] for t in run.tasks], device=run.env.device)

    weights = None if current else weight_vector(run.weighting.weights())
    chunks = [{k: v.chunk(accumulate)[i] for k, v in batch.items()} for i in range(accumulate)]
    loss_sum = torch.zeros(len(run.tasks), device=run.env.device)
    informative = torch.zeros(len(run.tasks), device=run.env.device)
    pending = []  # under `current`: each micro-batch's task losses, with their graphs, until the weights are known
    for i, chunk in enumerate(chunks):
        last = i == accumulate - 1
        sync = nullcontext() if last or not run.env.enabled else run.trained.no_sync()
        with sync:
            with run.autocast():
                outputs = task_outputs(run.trained(chunk["image"]), list(run.tasks))
            task_losses = torch.stack([task.loss(outputs[t].float(), chunk[t]) for t, task in run.tasks.items()])
            if current:
                pending.append(task_losses)
            else:
                total = (weights * task_losses).sum() / accumulate
                (run.scaler.scale(total) if run.scaler else total).backward()
        loss_sum += task_losses.detach()
        informative += task_losses.detach() != 0  # a task loss is exactly 0 only without a valid pixel
    # Each task's loss averaged over the micro-batches (of every rank) that had a valid pixel: a batch
    # half without valid depth must not halve the depth loss the adaptive weighting sees.
    sums, counts = all_reduce_sum(torch.cat([loss_sum, informative]), run.env).split(len(run.tasks))
    losses = (sums / counts.clamp(min=1)).tolist()  # the step's one host sync
    bad = [t for t, value in zip(run.tasks, losses) if not math.isfinite(value)]
    if bad:
        raise NonFiniteLossError(
            f"step {run.step + 1}: the loss of task(s) {', '.join(bad)} is not finite "
            f"({', '.join(f'{t}={v}' for t, v in zip(run.tasks, losses))}); the run stopped before applying this "
            f"step. {_checkpoint_hint(run)} Lower train.lr, or check the data."
        )
    named = dict(zip(run.tasks, losses))
    if current:
        # One backward over every micro-batch's graph: under DDP the last micro-batch's forward ran in sync
        # mode, so this single backward all-reduces each gradient once, over the whole step.
        weights = weight_vector(run.weighting.weights_for(named))
        total = sum((weights * task_losses).sum() for task_losses in pending) / accumulate
        (run.scaler.scale(total) if run.scaler else total).backward()
    if run.scaler:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.step += 1
    if not current:
        run.weighting.update(named)
    return named


def log_record(run: Run, losses: dict[str, float], report: sparsity.SparsityReport) -> dict[str, Any]:
    """One training record of log.jsonl. With a soft-threshold method it also holds the controller's
    account so far ("controller": interventions, total and net shift) and each score's own learning
    ("learned": s − s0 − net shift, logits), which the report draws."""
    record = {
        "step": run.step,
        "loss": losses,
        "total_loss": sum(losses.values()),
        "task_weights": run.weighting.weights(),
        "lr": run.optimizer.param_groups[0]["lr"],
        "sparsity": {"overall": report.overall, **{c: v.sparsity for c, v in report.components.items()}},
        "thresholds": report.thresholds,
    }
    controller = getattr(run.method, "controller", None)  # the soft-threshold methods' SparsityController
    if controller is not None:
        summary = controller.summary()
        record["controller"] = {k: summary[k] for k in ("interventions", "total_shift", "net_shift")}
        record["learned"] = summary["learned"]
    return record


def validate(run: Run, logger: RunLogger | None) -> None:
    """Evaluate on val; keep the weights with the lowest summed val loss as best.pt
    (from the method's selection start on: for sparse methods, once at the target)."""
    loader = eval_loader(run.config, run.datasets["val"], run.env.rank, run.env.world_size)
    metrics, losses = evaluate(run.trained, loader, run.tasks, run.env, autocast=run.autocast, description="val")
    val_loss = sum(losses.values())
    if run.step >= run.method.selection_start and val_loss < run.best["val_loss"]:
        run.best = {"step": run.step, "val_loss": val_loss, "val": metrics}
        if run.env.is_main:
            save_atomic({"step": run.step, "model": run.model.state_dict()}, run.folder.best)
    if logger:
        logger.log({"step": run.step, "val": metrics, "val_loss": losses})


def finish(run: Run, logger: RunLogger | None = None) -> dict[str, Any]:
    """Select the best weights, finalize them, evaluate on val and test, save model and result.

    A damaged or unfitting best.pt does not block the run: it finishes on the last step's
    weights, with a warning in `logger` (log.jsonl) and in result.json's "warnings" (which
    also lists the warnings of earlier resumes; on rank 0).

    result.json also says how the sparsity came about: "controller" (soft-threshold methods:
    measurements, interventions, their total and net shift, each score s, its init s0 and its
    own learning s − s0 − net shift, in logits), "allocation" ({component: {"sparsity", "global"}}:
    the final sparsity next to what one threshold over all weights gives at the same overall
    sparsity) and "guard" (min_density, the layers it held at their minimum, the layers left all
    zero). A layer left all zero is also a warning (Python, log.jsonl and "warnings").
    """
    thresholds = run.sparsity_report().thresholds
    barrier(run.env)  # rank 0 writes best.pt; the others read it
    selected = run.best["step"]
    if selected is not None:
        try:
            best = run.folder.best
            load_model_state(run.model, load_checkpoint(best, run.env.device)["model"], best)
        except CheckpointError as error:
            selected = None
            if logger:
                logger.warn(run.step, f"{error}; finished on the weights of the last step ({run.step}) instead of "
                                      f"those of the selected step {run.best['step']}")
    finalized = run.method.finalize(run.model)
    if finalized is not None and finalized.trimmed and abs(finalized.before.overall - finalized.after.overall) > LARGE_TRIM:
        if logger:  # a large trim changes the model without retraining: its metrics may suffer, so say it
            logger.warn(run.step, f"finalize moved the overall sparsity from {finalized.before.overall:.4f} to "
                                  f"{finalized.after.overall:.4f} without retraining ({finalized.pruned} weights pruned, "
                                  f"{finalized.revived} revived): the selected step {selected or run.step} was far from "
                                  "the target; train longer, or reach it earlier (method.reach_at)")
    if finalized is not None and finalized.aimed_at is not None and logger and \
            abs(finalized.after.overall - finalized.aimed_at) > LARGE_TRIM:  # policy "freeze": no trim, as the original
        logger.warn(run.step, f"the run ends at overall sparsity {finalized.after.overall:.4f}, aiming at "
                              f"{finalized.aimed_at:g}: policy 'freeze' does not trim (as the original); "
                              "policy 'exact' ends exactly at the target")
    run.trained = run.model  # evaluation needs no DDP wrapper; every rank evaluates its share
    results = {}
    for split in ("val", "test"):
        loader = eval_loader(run.config, run.datasets[split], run.env.rank, run.env.world_size)
        results[split], _ = evaluate(run.model, loader, run.tasks, run.env, autocast=run.autocast,
                                     progress=run.config.train.progress, description=split)
    report = run.sparsity_report()
    collapsed = report.collapsed
    if collapsed:
        message = (f"{len(collapsed)} prunable layer(s) ended all zero, so their outputs no longer depend on their "
                   f"inputs: {', '.join(collapsed)} (method.min_density={run.config.method.min_density:g})")
        if finalized is None:  # sparsity.finalize already warned for the soft-threshold methods
            warnings.warn(message, stacklevel=2)
        if logger:
            logger.warn(run.step, message)
    controller = getattr(run.method, "controller", None)  # the soft-threshold methods' SparsityController
    maskset = getattr(run.method, "maskset", None)  # the mask methods' MaskSet
    guarded = finalized.guarded if finalized is not None else (maskset.guarded if maskset is not None else [])
    result = {
        "method": run.method.name,
        "convention": run.config.convention,  # paper and corrected metrics are not comparable (docs/conventions.md)
        "target": run.config.method.target if run.method.sparse else 0.0,
        "steps": run.config.train.steps,
        "train_iterations": run.config.train.steps,
        "dense_iterations": run.method.dense_iterations,
        "selected_step": selected or run.step,
        "test": results["test"],
        "val": results["val"],
        "sparsity": {"overall": report.overall, "components": {c: v.sparsity for c, v in report.components.items()},
                     "numel": {c: v.numel for c, v in report.components.items()}},
        "thresholds": thresholds,
        "task_weights": run.weighting.weights(),
        "finalize": None if finalized is None else {
            "shift": finalized.shift, "before": finalized.before.overall, "after": finalized.after.overall,
            "pruned": finalized.pruned, "revived": finalized.revived,
            "trimmed": finalized.trimmed, "aimed_at": finalized.aimed_at},  # policy "freeze": no trim
        "controller": controller.summary() if controller is not None else None,
        "allocation": None if finalized is None else {
            c: {"sparsity": report.components[c].sparsity, "global": g}
            for c, g in finalized.global_allocation.items() if c in report.components},
        "guard": {"min_density": run.config.method.min_density, "guarded": guarded, "collapsed": collapsed},
        "warnings": run_warnings(run.run_dir) if logger else [],
    }
    if run.env.is_main:  # written atomically: a kill leaves no half model, and result.json last marks the end
        run.folder.write_model(run.model.state_dict(), run.spec)
        run.folder.write_result(result)
    return result


def run_dir_of(config: Config, run_dir: str | Path | None = None) -> Path:
    """Where `train(config, run_dir)` writes: `run_dir`, else out_dir/name."""
    return Path(run_dir) if run_dir else Path(config.out_dir) / (config.name or f"run_{config.method.name}")


def _refuse_finished_or_started(run_dir: Path) -> None:
    if RunDir(run_dir).started:
        raise ConfigError(f"run folder {run_dir} already holds a run; resume it with `adapmtl train --resume "
                          f"{run_dir}`, or choose another `name`/`out_dir`")


def _prepare_run_dir(config: Config, run_dir: Path, env: Distributed) -> None:
    """The run's first write: its folder, checkpoints/ and the resolved config."""
    if env.is_main:
        folder = RunDir(run_dir)
        folder.checkpoints.mkdir(parents=True, exist_ok=True)
        folder.write_config(config)
    barrier(env)


def check_stop_at(stop_at: int | None, step: int, steps: int) -> None:
    """Check that `stop_at` lies after the current `step` and at most at the run's last step.

    Raises ConfigError otherwise (None passes: no stop)."""
    if stop_at is not None and not step < stop_at <= steps:
        raise ConfigError(f"--stop-at {stop_at}: expected a step after the current one ({step}) and at most "
                          f"train.steps ({steps})")


def train(config: Config, run_dir: str | Path | None = None, *, stop_at: int | None = None) -> dict[str, Any] | None:
    """Train `config` into a new run folder (default: out_dir/name); returns the result dict.

    `stop_at`: stop after that step with a checkpoint, as a time-limited job would, to be
    continued with `resume(run_dir)`; returns None then.
    """
    run_dir = run_dir_of(config, run_dir)
    raise_if_busy(run_dir)  # "in use" rather than "already holds a run; resume it"
    _refuse_finished_or_started(run_dir)
    check_stop_at(stop_at, 0, config.train.steps)
    env = setup(config.train.device, config.train.dist_timeout)
    run = build_run(config, run_dir, env)  # every check of the config, data and model, before the first write
    with lock_run_dir(run_dir, env):
        _refuse_finished_or_started(run_dir)  # again under the lock: a concurrent start may have won
        _prepare_run_dir(config, run_dir, env)
        run.method.begin(run.model)
        return _loop(run, stop_at)


def resume(run_dir: str | Path, *, stop_at: int | None = None) -> dict[str, Any] | None:
    """Continue an interrupted run from its last checkpoint, exactly where it stopped.

    Holds the run folder's lock meanwhile (and first deletes what a killed save left).
    Raises ConfigError when the run has finished or `stop_at` is not ahead; CheckpointError
    when last.pt is missing, damaged or from another run; RunFolderBusyError when another
    process trains in the folder.
    """
    folder = RunDir(run_dir)
    config = folder.config()
    run_dir = folder.path
    env = setup(config.train.device, config.train.dist_timeout)
    with lock_run_dir(run_dir, env):
        if folder.finished:
            raise ConfigError(f"run {run_dir} has already finished (it has {folder.RESULT}); nothing to resume")
        if not folder.last.is_file():
            raise CheckpointError(f"cannot resume {run_dir}: it has no checkpoint ({folder.last}); train it again "
                                  f"from the start with `adapmtl train --config {folder.config_file} --run-dir {run_dir}`")
        run = build_run(config, run_dir, env)
        try:
            notes = restore_checkpoint(run, folder.last)
        except CheckpointError as error:
            raise CheckpointError(f"cannot resume {run_dir}: {error}") from None
        check_stop_at(stop_at, run.step, config.train.steps)
        return _loop(run, stop_at, notes)


def _loop(run: Run, stop_at: int | None, notes: list[str] | None = None) -> dict[str, Any] | None:
    """Train from run.step to the end (or `stop_at`), then finish; `notes` become the log's warnings."""
    t = run.config.train
    logger = RunLogger(run.run_dir, start=run.step) if run.env.is_main else None
    if logger:
        for note in notes or []:
            logger.warn(run.step, note)
    loader = train_loader(run.config, run.datasets["train"], run.step, run.env.rank, run.env.world_size)
    bar = tqdm(total=t.steps, initial=run.step, desc=f"{run.method.name}", dynamic_ncols=True,
               disable=not (t.progress and run.env.is_main))
    started = time.perf_counter()
    try:
        with collectives(run.env, "training's communication"), interrupt_between_steps() as interrupted:
            for batch in loader:  # (collectives: DDP's in forward and backward too)
                interrupted()  # a Ctrl-C during the last step stops here, with every file closed
                losses = train_step(run, move(batch, run.env.device))
                report = run.method.after_step(run.model, run.step)
                if run.step % t.log_every == 0 or run.step in (1, t.steps):
                    report = report or run.sparsity_report()
                    if logger:
                        logger.log(log_record(run, losses, report))
                    bar.set_postfix(loss=f"{sum(losses.values()):.3f}", sparsity=f"{report.overall:.3f}")
                if run.step % t.val_every == 0 or run.step == t.steps:
                    validate(run, logger)
                if run.env.is_main and (run.step % t.checkpoint_every == 0 or run.step in (stop_at, t.steps)):
                    save_checkpoint(run, run.folder.last)
                bar.update(1)
                if run.step == stop_at:
                    barrier(run.env)
                    return None
            result = finish(run, logger)
            result["train_seconds"] = time.perf_counter() - started
            return result
    finally:
        bar.close()
        if logger:
            logger.close()
