"""The run's log: one JSON object per line (log.jsonl) and TensorBoard events."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

LOG_FILE = "log.jsonl"


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of a run's log.jsonl, in order."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunLogger:
    """Appends records to log.jsonl and scalars to TensorBoard (main process only).

    On resume from step `start`, records past `start` (written after the last
    checkpoint by the interrupted run) are dropped, in the JSONL and in TensorBoard.
    """

    def __init__(self, run_dir: Path, start: int = 0, tensorboard: bool = True) -> None:
        self.path = run_dir / LOG_FILE
        kept = [r for r in read_log(run_dir) if r.get("step", 0) <= start]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start + 1 if start else None)

    def log(self, record: Mapping[str, Any]) -> None:
        """Write one record; its flat numeric entries (nested dicts flattened with '/') go to TensorBoard."""
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        if self.writer is not None:
            step = record["step"]
            for key, value in _flatten(record).items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
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
