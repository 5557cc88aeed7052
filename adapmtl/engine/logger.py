"""The run's log: one JSON object per line (log.jsonl) and TensorBoard events.

log.jsonl is only ever appended to, or replaced whole by an atomic rename: a process killed
at any moment leaves every record written before it, and at worst a torn last line.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Mapping

from adapmtl.engine.rundir import RunDir
from adapmtl.files import write_atomic



def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of a run's log.jsonl, in order.

    A last line without its newline (the process was killed while appending it) is
    skipped. Raises json.JSONDecodeError for any other damaged line, OSError if unreadable.
    """
    path = RunDir(run_dir).log_file
    if not path.is_file():
        return []
    lines = path.read_text().split("\n")  # the part after the last newline is a torn record, or ""
    return [json.loads(line) for line in lines[:-1] if line.strip()]


def run_warnings(run_dir: str | Path) -> list[str]:
    """The warnings `RunLogger.warn` recorded in the run's log, in order.

    Raises json.JSONDecodeError as `read_log` does."""
    return [r["warning"] for r in read_log(run_dir) if "warning" in r]


class RunWarning(UserWarning):
    """Something about a run that its results depend on (recorded in log.jsonl and result.json)."""


class RunLogger:
    """Appends records to log.jsonl and scalars to TensorBoard (main process only).

    On resume from step `start`, records past `start` (written after the last
    checkpoint by the interrupted run) are dropped, in the JSONL and in TensorBoard;
    the JSONL is replaced atomically, so a kill during a resume loses nothing.

    Raises json.JSONDecodeError if the existing log has a damaged line, OSError if it cannot be written.
    """

    def __init__(self, run_dir: Path, start: int = 0, tensorboard: bool = True) -> None:
        self.path = RunDir(run_dir).log_file
        kept = [r for r in read_log(run_dir) if r.get("step", 0) <= start]
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

            self.writer = SummaryWriter(str(RunDir(run_dir).tensorboard_dir), purge_step=start + 1 if start else None)

    def log(self, record: Mapping[str, Any]) -> None:
        """Write one record; its flat numeric entries (nested dicts flattened with '/') go to TensorBoard.

        Raises OSError if log.jsonl cannot be appended to."""
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        if self.writer is not None:
            step = record["step"]
            for key, value in _flatten(record).items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(key, value, step)

    def warn(self, step: int, message: str) -> None:
        """Record a warning about the run (kept across resumes; result.json lists them) and show it.

        Raises OSError as `log` does."""
        warnings.warn(message, RunWarning, stacklevel=2)
        self.log({"step": step, "warning": message})

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat
