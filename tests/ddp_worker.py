"""One rank of the data-parallel test (spawned; importable so multiprocessing can find it)."""
from __future__ import annotations

import json
import os
from pathlib import Path


def run_rank(rank: int, world_size: int, port: int, out_dir: str, overrides: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    from adapmtl.engine import train
    from tests.engine_helpers import tiny_config

    result = train(tiny_config(Path(out_dir), *overrides), Path(out_dir) / "ddp")
    summary = {"thresholds": result["thresholds"], "task_weights": result["task_weights"],
               "sparsity": result["sparsity"]["overall"], "test": result["test"]}
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(summary))
    dist.destroy_process_group()
