"""Data-parallel plumbing: one process per device, started by torchrun."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

from adapmtl.errors import AdapMTLError

# train.dist_timeout's default. A healthy rank waits for the others at most while one of them
# writes a checkpoint or evaluates its share, seconds to a few minutes; ten minutes ends a
# run with a stuck rank well before torch's 30-minute gloo default would, without risking
# false alarms on slow disks.
DEFAULT_TIMEOUT = 600.0
REPORT_GRACE = 3.0  # seconds the ranks that timed out wait for one another's reports


class DistributedError(AdapMTLError, RuntimeError):
    """A collective operation failed: another rank is stuck (past train.dist_timeout) or dead."""


@dataclass(frozen=True)
class Distributed:
    """This process's place: rank, world size, and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that writes files and logs)."""
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present, else CPU. Raises DistributedError if a CUDA device is asked
    for and CUDA is unavailable or has no device of that index."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DistributedError(f"`train.device`: {name!r} is not available on this machine (no CUDA device); "
                               "use train.device=cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DistributedError(f"`train.device`: {name!r} does not exist; this machine has "
                               f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def setup(device_name: str, timeout: float = DEFAULT_TIMEOUT) -> Distributed:
    """Prepare this process for training or evaluation.

    Joins the process group when started by torchrun (WORLD_SIZE > 1): NCCL on GPU,
    gloo on CPU. A collective that waits more than `timeout` seconds for another rank
    (stopped, hung, or dead without its socket closing) fails instead of waiting for
    ever: under gloo our collectives raise DistributedError naming the ranks that did not
    answer; under NCCL its watchdog ends the process. Also flushes denormal floats to zero on CPU: as training goes on,
    tiny gradients become denormals and x86 CPUs handle those in microcode, which
    made backward 6× slower in the quickstart (2.36 vs 0.40 s/step at step 400).
    Raises DistributedError if the device is not available (see `resolve_device`).
    """
    torch.set_flush_denormal(True)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed(0, 1, resolve_device(device_name))
    device = resolve_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout))
    return Distributed(dist.get_rank(), dist.get_world_size(), device)


def all_reduce_mean(values: torch.Tensor, env: Distributed) -> torch.Tensor:
    """Mean over ranks (identity on one process). Raises DistributedError (see `collectives`)."""
    if env.enabled:
        with collectives(env, "an all-reduce"):
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= env.world_size
    return values


def all_reduce_sum(values: torch.Tensor, env: Distributed) -> torch.Tensor:
    """Sum over ranks (identity on one process). Raises DistributedError (see `collectives`)."""
    if env.enabled:
        with collectives(env, "an all-reduce"):
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(env: Distributed) -> None:
    """Wait for every rank (no-op on one process). Raises DistributedError (see `collectives`)."""
    if env.enabled:
        with collectives(env, "a barrier"):
            dist.barrier()


# how gloo words a collective that lost a rank (RuntimeError, no finer type): timed out, or the peer's socket closed
LOST_RANK = ("timed out", "timeout", "closed by peer", "reset by peer")


@contextmanager
def collectives(env: Distributed, what: str) -> Iterator[None]:
    """Run the block. Raises DistributedError naming the ranks that did not answer when a
    collective in it (ours, or DDP's in forward and backward) loses a rank.

    Every rank that fails reports so in the process group's store and, after REPORT_GRACE
    seconds, names the other ranks that reported nothing: those are stuck or dead.
    Other errors pass through unchanged.
    """
    try:
        yield
    except RuntimeError as error:
        lost = isinstance(error, dist.DistError) or any(m in str(error).lower() for m in LOST_RANK)
        if not env.enabled or isinstance(error, DistributedError) or not lost:
            raise
        silent = _silent_ranks(env)
        who = f"rank(s) {', '.join(map(str, silent))}" if silent else "another rank"
        raise DistributedError(
            f"rank {env.rank}: {what} with the other ranks failed: {who} did not answer in time, so the run "
            f"stopped (stuck, stopped or dead: look at that rank's output). If the ranks are only slow, raise "
            f"train.dist_timeout. ({str(error).strip()})") from None


def _silent_ranks(env: Distributed) -> list[int]:
    """The other ranks that have not reported a failure (empty when the store is unreachable)."""
    try:
        store = dist.distributed_c10d._get_default_store()  # the rendezvous store, which every rank reaches
        store.set_timeout(timedelta(seconds=REPORT_GRACE))
        store.set(f"adapmtl/failed/{env.rank}", "1")
        time.sleep(REPORT_GRACE)
        return [r for r in range(env.world_size) if r != env.rank and not store.check([f"adapmtl/failed/{r}"])]
    except RuntimeError:  # the store lives in a rank (or torchrun agent) that is itself gone or stuck
        return []
