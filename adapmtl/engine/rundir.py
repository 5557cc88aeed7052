"""`RunDir`: one run folder, the single home of its layout and of how its files are read and written.

    run = RunDir("runs/quickstart/adapmtl")
    run.config()          # the validated Config the run trained with
    run.result()          # result.json as a dict (None until the run finishes)
    run.load_model()      # the finalized model, rebuilt from the spec in model.safetensors

Layout (every file written atomically: a reader sees the old file or the new one):

    config.yaml            the resolved config (every field)
    log.jsonl              one JSON record per logged step, validation and warning
    checkpoints/last.pt    the state to resume from; checkpoints/best.pt: the selected weights
    model.safetensors      the finalized model; its metadata holds the ModelSpec that rebuilds it
    result.json            written last: its presence marks a finished run
    export/  sensitivity/  report/  tensorboard/   what later commands add
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from adapmtl.container import encode_checked, read_checked

from adapmtl.engine.checkpoint import config_differences, load_model_state
from adapmtl.engine.config import Config, ConfigError, validate_config
from adapmtl.errors import AdapMTLError
from adapmtl.files import write_atomic
from adapmtl.methods import METHODS, option_keys
from adapmtl.models.spec import ModelSpec


MODEL_FORMAT = "adapmtl-run-model"  # the container format of a run's model.safetensors


class RunDirError(AdapMTLError, ValueError):
    """A folder that is not a run, a run that has not finished, or a damaged run file."""


def _inside(relative: str, doc: str) -> property:
    """A layout entry: the path `relative` inside the run folder."""
    return property(lambda self: self.path / relative, doc=doc)


@dataclass(frozen=True)
class RunDir:
    """A run folder at `path` (it may not exist yet: `train` creates it)."""

    path: Path

    CONFIG = "config.yaml"
    RESULT = "result.json"
    MODEL = "model.safetensors"
    LOG = "log.jsonl"
    LOCK = ".lock"

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    # --- layout: every path of a run folder, here and nowhere else
    config_file = _inside(CONFIG, "The resolved config.")
    result_file = _inside(RESULT, "The result, written last: its presence marks a finished run.")
    model_file = _inside(MODEL, "The finalized model.")
    log_file = _inside(LOG, "One JSON record per logged step, validation and warning.")
    lock_file = _inside(LOCK, "The lock a process training in the folder holds (adapmtl.engine.runlock).")
    checkpoints = _inside("checkpoints", "The checkpoints/ folder.")
    last = _inside("checkpoints/last.pt", "The checkpoint to resume from.")
    best = _inside("checkpoints/best.pt", "The weights selected on validation (before finalize).")
    export_dir = _inside("export", "What `adapmtl export` writes by default.")
    plan_file = _inside("export/plan.json", "The per-layer plan `adapmtl compile` saves (see compile_sparse).")
    report_dir = _inside("report", "What `adapmtl report` writes by default.")
    sensitivity_dir = _inside("sensitivity", "What `adapmtl sensitivity` writes, and `adapmtl report` reads.")
    tensorboard_dir = _inside("tensorboard", "TensorBoard event files.")

    # --- state
    @property
    def is_run(self) -> bool:
        """Whether the folder holds a run (its config)."""
        return self.config_file.is_file()

    @property
    def started(self) -> bool:
        """Whether the run wrote a checkpoint or finished (a new run must not reuse the folder)."""
        return self.last.is_file() or self.result_file.is_file()

    @property
    def finished(self) -> bool:
        """Whether result.json exists (written last, so the run finished)."""
        return self.result_file.is_file()

    def require_run(self) -> "RunDir":
        """Returns self. Raises RunDirError saying whether the folder is missing or holds no run."""
        if not self.path.exists():
            raise RunDirError(f"run folder {self.path} does not exist")
        if not self.is_run:
            raise RunDirError(f"{self.path} is not a run folder (it has no {self.CONFIG})")
        return self

    def require_finished(self) -> "RunDir":
        """Returns self. Raises RunDirError saying what is missing (folder, run, or the finished model)."""
        self.require_run()
        if not self.model_file.is_file() or not self.finished:
            raise RunDirError(f"run {self.path} has not finished (no {self.MODEL} and {self.RESULT}): only a "
                              f"finished run has a finalized model; `adapmtl train --resume {self.path}` finishes it")
        return self

    # --- reading
    def config(self) -> Config:
        """The config the run trained with, validated. Raises RunDirError if the folder holds no
        run or config.yaml is not valid YAML, ConfigError if it is not a valid config.

        Configs written before each method declared its own options held every method's
        options; those that the run's method does not take are dropped (they were defaults).
        """
        self.require_run()
        try:
            raw = yaml.safe_load(self.config_file.read_text()) or {}
        except yaml.YAMLError as error:
            raise RunDirError(f"{self.config_file} is damaged (not valid YAML: {error})") from None
        method = raw.get("method") if isinstance(raw, dict) else None
        if isinstance(method, dict) and method.get("name") in METHODS:
            raw["method"] = _current_method_section(method)
        return validate_config(raw, str(self.config_file))

    def result(self) -> dict[str, Any] | None:
        """result.json as a dict, None while the run has not finished. Raises RunDirError if damaged."""
        if not self.result_file.is_file():
            return None
        try:
            return json.loads(self.result_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RunDirError(f"{self.result_file} is damaged ({error})") from None

    def model_spec(self) -> ModelSpec:
        """The spec that rebuilds the finalized model: from model.safetensors' metadata (older
        runs: from config.yaml and the heads' output channels). Raises RunDirError if the run
        has not finished or its model file is damaged, ModelError if the recorded spec is
        invalid, ConfigError (older runs) if config.yaml is."""
        self.require_finished()
        metadata = _safetensors_metadata(self.model_file)
        if "model" in metadata:
            try:
                recorded = json.loads(metadata["model"])
            except json.JSONDecodeError as error:
                raise RunDirError(f"{self.model_file}: its model spec metadata is damaged ({error})") from None
            return ModelSpec.from_dict(recorded, where=str(self.model_file))
        config = self.config()
        tasks = _head_channels(read_state(self.model_file))
        order = list((self.result() or {}).get("test", {}))  # safetensors sorts keys; the result keeps task order
        tasks = dict(sorted(tasks.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
        return ModelSpec.from_options(config.model, tasks)

    def load_model(self) -> tuple[nn.Module, ModelSpec]:
        """The finalized model (eval mode) and its spec. Raises RunDirError if the run has not
        finished or its model file is damaged, ModelError if the recorded spec is invalid,
        ConfigError (older runs) if config.yaml is, CheckpointError if it does not fit the spec."""
        spec = self.model_spec()
        model = spec.build()
        load_model_state(model, read_state(self.model_file), self.model_file)
        return model.eval(), spec

    def differences(self, config: Config) -> list[str]:
        """The settings (dotted keys) in which `config` differs from the one this run trained with,
        as "key: run VALUE, now VALUE"; where a run runs (name, out_dir, device, ...) is ignored."""
        return config_differences(self.config().model_dump(mode="json"), config.model_dump(mode="json"), "run")

    def require_same_config(self, config: Config) -> None:
        """Raise ConfigError if this folder holds a run made with other settings than `config`
        (reusing or resuming it would mix two experiments).

        Raises ConfigError naming the settings that differ."""
        if self.is_run and (different := self.differences(config)):
            raise ConfigError(f"{self.path} holds a run made with other settings ({'; '.join(different)}); "
                              "use another output folder, or delete this one to start again")

    # --- writing (atomic)
    def write_config(self, config: Config) -> None:
        """config.yaml: every field of the resolved config, defaults included. Raises OSError if unwritable."""
        write_atomic(self.config_file, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode())

    def write_result(self, result: Mapping[str, Any]) -> None:
        """result.json (marks the run finished; write it last). Raises OSError if unwritable."""
        write_atomic(self.result_file, json.dumps(result, indent=2).encode())

    def write_model(self, state: Mapping[str, torch.Tensor], spec: ModelSpec) -> None:
        """model.safetensors: the finalized state dict, with the spec that rebuilds it and a SHA-256
        over every tensor in its metadata (checked by `read_state`). Raises OSError if unwritable."""
        write_atomic(self.model_file, encode_checked(state, MODEL_FORMAT, {"model": json.dumps(spec.to_dict())}))


LEGACY_WEIGHTING_KEYS = {"weighting_begin": "begin", "weighting_window": "window"}  # now weighting_options


def _current_method_section(method: Mapping[str, Any]) -> dict[str, Any]:
    """A saved method section in today's form. Older adapmtl saved every method's options (only
    the run's own method's are kept: the rest were defaults) and the adaptive weighting's options
    as `weighting_begin`/`weighting_window` (moved into `weighting_options`)."""
    known_elsewhere, accepted = set(option_keys()), set(option_keys(method["name"]))
    section = {k: v for k, v in method.items()
               if (k in accepted or k not in known_elsewhere) and k not in LEGACY_WEIGHTING_KEYS}
    legacy = {new: method[old] for old, new in LEGACY_WEIGHTING_KEYS.items() if method.get(old) is not None}
    if legacy:
        section["weighting_options"] = {**legacy, **section.get("weighting_options", {})}
    return section


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file, verified against its SHA-256 when it carries one (a run's
    model.safetensors, adapmtl's exports); a plain file (from elsewhere, or an older run) loads as is.

    Raises RunDirError naming the file when it is missing, truncated, not a safetensors file,
    or does not match its recorded SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path} does not exist")
    metadata = _safetensors_metadata(path)
    if "sha256" in metadata:
        return read_checked(path, metadata.get("format", ""), error=RunDirError)[0]
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise RunDirError(f"{path} is damaged or not a safetensors file (truncated or changed on disk?): "
                          f"{error}") from None


def _safetensors_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as file:
            return file.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise RunDirError(f"{path} is damaged or not a safetensors file (truncated or changed on disk?): "
                          f"{error}") from None


def _head_channels(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """{task: output channels} of an ASPP multitask state dict (heads.<task>.branches.0.conv3.weight)."""
    tasks = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) == 6 and parts[0] == "heads" and parts[2:] == ["branches", "0", "conv3", "weight"]:
            tasks[parts[1]] = int(value.shape[0])
    if not tasks:
        raise RunDirError("no task heads found in the model file (keys heads.<task>.branches.0.conv3.weight)")
    return tasks


__all__ = ["RunDir", "RunDirError", "read_state"]
