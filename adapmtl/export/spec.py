"""What `adapmtl.models.create_model` needs to rebuild a run's model, and the finalized model itself.

The task → channels map is read from the finalized state dict (each ASPP head's last conv),
not from the dataset, so a run's model can be exported or rebuilt on a machine without its data.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import json

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file

from adapmtl.export.errors import ExportError
from adapmtl.models import MultiTaskModel, create_model

CONFIG_FILE, MODEL_FILE, RESULT_FILE = "config.yaml", "model.safetensors", "result.json"  # as the engine writes them


@dataclass(frozen=True)
class ModelSpec:
    """The arguments of `create_model(name, tasks, width=, head_channels=, dropout=, upsample=)`."""

    name: str
    tasks: dict[str, int]
    width: float = 1.0
    head_channels: int = 1024
    dropout: float = 0.5
    upsample: bool = True

    def build(self) -> MultiTaskModel:
        """A freshly initialised model of this architecture (load a state dict into it)."""
        return create_model(self.name, dict(self.tasks), width=self.width, head_channels=self.head_channels,
                            dropout=self.dropout, upsample=self.upsample)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "model spec") -> "ModelSpec":
        """Parse a spec written by `to_dict`; `where` names the file in errors."""
        try:
            return cls(name=str(data["name"]), tasks={str(t): int(c) for t, c in data["tasks"].items()},
                       width=float(data["width"]), head_channels=int(data["head_channels"]),
                       dropout=float(data["dropout"]), upsample=bool(data["upsample"]))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ExportError(f"{where}: not a valid model spec ({error!r}); expected the keys name, tasks "
                              f"{{task: channels}}, width, head_channels, dropout, upsample") from None


def head_channels_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """{task: output channels} in the state dict's head order (from heads.<task>.branches.0.conv3.weight)."""
    tasks = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) == 6 and parts[0] == "heads" and parts[2:] == ["branches", "0", "conv3", "weight"]:
            tasks[parts[1]] = int(value.shape[0])
    return tasks


def run_model_spec(run_dir: str | Path, state: Mapping[str, torch.Tensor]) -> ModelSpec:
    """The spec of a run's model: architecture from its config.yaml, tasks from its finalized `state`
    (in the order of the run's result.json: safetensors files sort their keys)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ExportError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}")
    model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
    tasks = head_channels_from_state(state)
    if not tasks:
        raise ExportError(f"{Path(run_dir) / MODEL_FILE}: no task heads found (keys heads.<task>.branches.0.conv3.weight)")
    result = Path(run_dir) / RESULT_FILE
    if result.is_file():
        order = list(json.loads(result.read_text()).get("test", {}))
        tasks = dict(sorted(tasks.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
    return ModelSpec.from_dict({"name": model.get("name"), "tasks": tasks, "width": model.get("width", 1.0),
                                "head_channels": model.get("head_channels", 1024),
                                "dropout": model.get("dropout", 0.5), "upsample": model.get("upsample", True)},
                               where=str(path))


def load_run_model(run_dir: str | Path) -> tuple[MultiTaskModel, ModelSpec]:
    """A run's finalized model (its model.safetensors in the architecture of its config), in eval mode."""
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise ExportError(f"{path} does not exist: the run has not finished (only a finished run has a finalized model)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ExportError(f"{path}: cannot read the finalized model ({error})") from None
    spec = run_model_spec(run_dir, state)
    model = spec.build()
    model.load_state_dict(state)
    return model.eval(), spec
