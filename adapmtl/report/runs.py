"""Run folders as the report reads them: config, log records, result."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from adapmtl.engine.logger import read_log
from adapmtl.engine.rundir import RunDir, RunDirError
from adapmtl.errors import AdapMTLError
from adapmtl.methods import METHODS


class ReportError(AdapMTLError, ValueError):
    """Runs that cannot be reported as asked (no run folder, unknown baseline, unknown component)."""


@dataclass
class RunRecord:
    """One run folder: `config` (its config.yaml), `log` (log.jsonl records), `result` (None until finished)."""

    path: Path
    label: str
    config: dict[str, Any]
    log: list[dict[str, Any]] = field(repr=False)
    result: dict[str, Any] | None = field(repr=False)

    @property
    def train_records(self) -> list[dict[str, Any]]:
        """The per-step records (losses, task weights, sparsity, thresholds), in step order."""
        return [r for r in self.log if "loss" in r]

    @property
    def val_records(self) -> list[dict[str, Any]]:
        """The validation records (metrics and losses on val), in step order."""
        return [r for r in self.log if "val" in r]

    @property
    def method(self) -> str:
        """The method's name (from result.json, else config.yaml; "?" if neither says)."""
        return (self.result or {}).get("method") or self.config.get("method", {}).get("name", "?")

    @property
    def target(self) -> float:
        """The target sparsity (0 for dense)."""
        if self.result is not None:
            return float(self.result.get("target", 0.0))
        return float(self.config.get("method", {}).get("target", 0.0)) if self.sparse else 0.0

    @property
    def sparse(self) -> bool:
        """Whether the run's method prunes (a dense run is the ΔT baseline)."""
        if self.method in METHODS:
            return METHODS[self.method].sparse
        return float((self.result or {}).get("target", 0.0)) > 0  # a method no longer registered: its result says

    @property
    def seed(self) -> int:
        """The run's seed (0 if the config lacks one)."""
        return int(self.config.get("seed", 0))

    @property
    def has_model(self) -> bool:
        """Whether the run folder holds its finalized model.safetensors."""
        return RunDir(self.path).model_file.is_file()


def _is_run(path: Path) -> bool:
    return RunDir(path).is_run


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders among `paths`; a folder that is not a run (a bench's output) stands for every
    run folder below it, in sorted order. Raises ReportError if a path does not exist or is a
    folder with no run below it."""
    found: list[Path] = []
    for path in map(Path, paths):
        if _is_run(path):
            found.append(path)
        elif path.is_dir():
            below = sorted(p.parent for p in path.rglob(RunDir.CONFIG))
            if not below:
                raise ReportError(f"{path}: neither a run folder (no {RunDir.CONFIG}) nor a folder holding runs")
            found.extend(below)
        else:
            raise ReportError(f"{path} does not exist")
    return list(dict.fromkeys(p.resolve() for p in found))


def load_run(path: str | Path, label: str | None = None) -> RunRecord:
    """Read one run folder; `label` defaults to the folder's name.

    Raises ReportError if it is not a run folder or its config.yaml, result.json or log.jsonl is
    damaged; ConfigError if its config is not valid."""
    path = Path(path)
    if not _is_run(path):
        raise ReportError(f"{path} is not a run folder (no {RunDir.CONFIG})")
    folder = RunDir(path)
    try:
        config = folder.config().model_dump(mode="json")
        result = folder.result()
        log = read_log(path)
    except RunDirError as error:  # names the damaged file
        raise ReportError(str(error)) from None
    except json.JSONDecodeError as error:
        raise ReportError(f"{RunDir(path).log_file} is damaged ({error})") from None
    return RunRecord(path, label or path.name, config, log, result)


def load_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    """Every run among `paths` (see `find_runs`), labelled by its path below their common folder.

    Raises ReportError or ConfigError as `find_runs` and `load_run` do."""
    found = find_runs(paths)
    if len(found) == 1:
        return [load_run(found[0])]
    common = Path(os.path.commonpath(found))
    return [load_run(p, str(p.relative_to(common)) if p != common else p.name) for p in found]
