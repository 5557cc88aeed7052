"""Re-evaluate a finished or interrupted run's model on a split."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torch import nn
from torch.utils.data import Dataset

from adapmtl.engine.checkpoint import load_checkpoint, load_model_state
from adapmtl.engine.config import Config, ConfigError
from adapmtl.engine.data import build_dataset, build_tasks, eval_loader
from adapmtl.engine.distributed import setup
from adapmtl.engine.evaluate import evaluate
from adapmtl.engine.rundir import RunDir, read_state
from adapmtl.engine.trainer import _autocast
from adapmtl.models.spec import ModelSpec
from adapmtl.methods import create_method
from adapmtl.sparsity import sparsity_report

WHICH = ("final", "best", "last")


def evaluate_run(run_dir: str | Path, split: str = "test", which: str = "final") -> dict[str, Any]:
    """Metrics of a run's model on `split` ("train", "val", "test").

    which: "final" (the finalized model.safetensors), "best" (the selected
    checkpoint, before finalize) or "last" (the last checkpoint). Returns
    {"metrics": {task: {metric: value}}, "loss": {task: value}, "sparsity": overall}.

    Raises RunDirError (no such run, not finished, damaged config or model file), CheckpointError
    (a damaged or unfitting checkpoint), ConfigError (bad split or which, invalid config),
    DatasetError (unreadable data), ModelError, TaskError, MethodError or DistributedError
    (see `run_evaluator`).
    """
    folder = RunDir(run_dir)
    if which not in WHICH:
        raise ConfigError(f"which must be one of {WHICH}, got {which!r}")
    config, dataset, run_on_split = run_evaluator(folder.path, split)
    spec = ModelSpec.from_options(config.model, dataset.task_channels)
    model = spec.build()
    if which == "final":
        folder.require_finished()
        load_model_state(model, read_state(folder.model_file), folder.model_file)
    else:
        create_method(config.method, config.train.steps, spec.scope).prepare(model)  # same parametrization as in training
        path = folder.best if which == "best" else folder.last
        load_model_state(model, load_checkpoint(path)["model"], path)
    metrics, losses = run_on_split(model)
    return {"metrics": metrics, "loss": losses, "sparsity": sparsity_report(model, **spec.scope.arguments()).overall}


def run_evaluator(run_dir: str | Path, split: str) -> tuple[Config, Dataset, Callable[[nn.Module], tuple]]:
    """(config, dataset, evaluate) for a run's `split`, as the run itself evaluates:
    `evaluate(model)` moves the model to the run's device and returns
    ({task: {metric: value}}, {task: mean loss}) at the run's precision.

    Raises ConfigError for another split or an invalid config, RunDirError if the folder holds
    no run, DistributedError if the device is unavailable, DatasetError if the split cannot be
    read, TaskError if its tasks cannot be built; `evaluate` raises as `evaluate.evaluate` does."""
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be train, val or test, got {split!r}")
    config = RunDir(run_dir).config()
    env = setup(config.train.device, config.train.dist_timeout)
    dataset = build_dataset(config, split)
    tasks = build_tasks(config, dataset)
    autocast, _ = _autocast(config, env.device)

    def run_on_split(model: nn.Module) -> tuple:
        model.to(env.device)
        return evaluate(model, eval_loader(config, dataset), tasks, env, autocast=autocast,
                        progress=config.train.progress, description=split)

    return config, dataset, run_on_split
