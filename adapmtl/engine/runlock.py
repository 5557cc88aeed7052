"""One training at a time per run folder: an exclusive lock held for the whole run."""
from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from adapmtl.engine.distributed import Distributed, all_reduce_sum
from adapmtl.engine.rundir import RunDir
from adapmtl.errors import AdapMTLError
from adapmtl.files import remove_temporaries



class RunFolderBusyError(AdapMTLError, RuntimeError):
    """Another process is training in the same run folder."""


def raise_if_busy(run_dir: str | Path) -> None:
    """Raise RunFolderBusyError if another process holds `run_dir`'s lock now (a quick look,
    for a clear message before slower checks; `lock_run_dir` is what guarantees exclusion)."""
    path = RunDir(run_dir).lock_file
    if not path.is_file():
        return
    with open(path) as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(Path(run_dir), path.read_text().strip()) from None


def _busy(run_dir: Path, holder: str) -> RunFolderBusyError:
    where = f" ({holder})" if holder else ""
    return RunFolderBusyError(
        f"run folder {run_dir} is in use by another training{where}: two runs in one folder would mix their "
        f"logs and checkpoints. Wait for it to end, or choose another `name`/`out_dir`")


@contextmanager
def lock_run_dir(run_dir: str | Path, env: Distributed) -> Iterator[None]:
    """Hold `run_dir`'s lock while the block runs (creating the folder if needed), after
    deleting the temporary files a killed run left there.

    The lock is an flock on run_dir/.lock: the system releases it when the holder exits,
    however it exits, so a crashed run never leaves the folder locked. Under torchrun only
    rank 0 takes it (flock is per process: ranks would lock one another out), and every
    rank learns the outcome, so that all ranks of a second job stop, not only its rank 0.

    Raises RunFolderBusyError when another process holds the lock.
    """
    run_dir = Path(run_dir)
    lock, holder = None, ""
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = open(RunDir(run_dir).lock_file, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            lock, holder = None, (RunDir(run_dir).lock_file).read_text().strip()
    busy = all_reduce_sum(torch.tensor([float(env.is_main and lock is None)], device=env.device), env).item()
    if busy:
        raise _busy(run_dir, holder)
    try:
        if lock is not None:
            lock.truncate(0)  # the lock file names its holder, for the message above
            lock.write(f"process {os.getpid()} on {socket.gethostname()}\n")
            lock.flush()
            for folder in (run_dir, RunDir(run_dir).checkpoints):
                remove_temporaries(folder)
        yield
    finally:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()
