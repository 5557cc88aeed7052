"""A finished run's finalized model and the spec that rebuilds it, for the exporters."""
from __future__ import annotations

from pathlib import Path

from adapmtl.engine.rundir import RunDir
from adapmtl.models import MultiTaskModel
from adapmtl.models.spec import ModelSpec


def load_run_model(run_dir: str | Path) -> tuple[MultiTaskModel, ModelSpec]:
    """A run's finalized model (its model.safetensors in the architecture of its spec), in eval mode.

    Raises RunDirError when the folder is not a finished run or its model file is damaged,
    ModelError if the recorded spec is invalid, ConfigError (older runs) if config.yaml is,
    CheckpointError if the weights do not fit the spec."""
    return RunDir(run_dir).load_model()
