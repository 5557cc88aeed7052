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


def tiny_eval_batches(indices):
    """Samples 0..2 of a fixed toy set; sample 1 has no valid depth pixel at all."""
    import torch

    generator = torch.Generator().manual_seed(0)
    samples = []
    for i in range(3):
        depth = torch.rand(1, 4, 4, generator=generator) + 0.5
        samples.append({"image": torch.rand(3, 4, 4, generator=generator),
                        "depth_zbuffer": depth * (i != 1)})
    return [{k: v.unsqueeze(0) for k, v in samples[i].items()} for i in indices]


def eval_rank(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """Evaluate a fixed 'model' on this rank's strided share; write the merged metrics."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    import torch
    import torch.distributed as dist

    from adapmtl.engine.distributed import setup
    from adapmtl.engine.evaluate import evaluate
    from adapmtl.tasks import get_task

    env = setup("cpu")
    model = torch.nn.ModuleDict()  # forward: depth = mean of the image channels
    model.forward = lambda image: {"depth_zbuffer": image.mean(1, keepdim=True)}
    metrics, _ = evaluate(model, tiny_eval_batches(range(rank, 3, world_size)),
                          {"depth_zbuffer": get_task("depth_zbuffer")}, env)
    (Path(out_dir) / f"eval{rank}.json").write_text(json.dumps(metrics))
    dist.destroy_process_group()


def frozen_rank(rank: int, world_size: int, port: int, run_dir: str) -> None:
    """Resume `run_dir` on this rank; rank 1 freezes (SIGSTOP) before step 3, rank 0 writes the error it gets."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    import signal
    import time

    import torch

    import adapmtl.engine.trainer as trainer

    torch.set_num_threads(1)
    real_step = trainer.train_step

    def freezing_step(run, batch):
        if rank == 1 and run.step == 2:
            os.kill(os.getpid(), signal.SIGSTOP)
        return real_step(run, batch)

    trainer.train_step = freezing_step
    started = time.monotonic()
    try:
        trainer.resume(run_dir)
        outcome = {"error": None}
    except Exception as error:  # the test reads what rank 0 got
        outcome = {"error": f"{type(error).__name__}: {error}"}
    outcome["seconds"] = time.monotonic() - started
    (Path(run_dir) / f"frozen{rank}.json").write_text(json.dumps(outcome))
