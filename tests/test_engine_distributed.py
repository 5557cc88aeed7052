"""Data-parallel training on 2 CPU processes (gloo) matches one process with the same global batch."""
import json
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from adapmtl.engine import train
from adapmtl.engine.checkpoint import load_checkpoint
from tests.ddp_worker import run_rank
from tests.engine_helpers import tiny_config

# dropout off: its masks come from each process's RNG; validation only at the end, so
# selection is the last step in both (BN running stats are rank 0's under DDP)
SAME = ["model.dropout=0", "train.val_every=100", "data.batch_size=4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_two_gloo_ranks_agree_and_match_one_process_with_the_same_global_batch(tmp_path):
    mp.start_processes(run_rank, args=(2, _free_port(), str(tmp_path), SAME), nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["thresholds"] == ranks[1]["thresholds"]  # identical decisions on every rank
    assert ranks[0]["task_weights"] == ranks[1]["task_weights"]
    assert ranks[0]["test"] == ranks[1]["test"]
    assert load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")["world_size"] == 2

    # one process, same global batch of 4 as 2 micro-batches of 2 (what each rank sees)
    single = train(tiny_config(tmp_path, *SAME, "train.accumulate=2"), tmp_path / "single")
    assert abs(single["sparsity"]["overall"] - 0.8) <= 0.0005 and abs(ranks[0]["sparsity"] - 0.8) <= 0.0005
    for group, value in single["thresholds"].items():
        assert ranks[0]["thresholds"][group] == pytest.approx(value, rel=1e-4)
    for task, value in single["task_weights"].items():
        assert ranks[0]["task_weights"][task] == pytest.approx(value, rel=1e-4)
    ddp_weights = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    single_weights = load_file(str(tmp_path / "single" / "model.safetensors"))
    parameters = [k for k in single_weights if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    worst = max(float((ddp_weights[k] - single_weights[k]).abs().max()) for k in parameters)
    print(f"largest weight difference DDP vs one process: {worst:.2e}")
    assert worst < 1e-4


def test_distributed_evaluation_merges_ranks_even_without_valid_pixels_on_one(tmp_path):
    from adapmtl.engine.distributed import Distributed
    from adapmtl.engine.evaluate import evaluate
    from adapmtl.tasks import get_task
    from tests.ddp_worker import eval_rank, tiny_eval_batches

    # rank 1 reads only sample 1, whose depth is all invalid: its metric state stays empty
    mp.start_processes(eval_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"eval{r}.json").read_text()) for r in (0, 1)]
    model = torch.nn.ModuleDict()
    model.forward = lambda image: {"depth_zbuffer": image.mean(1, keepdim=True)}
    single, _ = evaluate(model, tiny_eval_batches(range(3)), {"depth_zbuffer": get_task("depth_zbuffer")},
                         Distributed(0, 1, torch.device("cpu")))
    assert ranks[0] == ranks[1]
    assert ranks[0]["depth_zbuffer"] == pytest.approx(single["depth_zbuffer"])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_a_frozen_rank_ends_the_run_with_an_error_naming_it(tmp_path):
    from tests.ddp_worker import frozen_rank

    run = tmp_path / "frozen"
    train(tiny_config(tmp_path, "name=frozen", "train.dist_timeout=3", *SAME), stop_at=2)
    processes = mp.start_processes(frozen_rank, args=(2, _free_port(), str(run)), nprocs=2, start_method="spawn",
                                   join=False).processes
    try:
        processes[0].join(timeout=120)
        assert processes[0].exitcode == 0, "rank 0 still waits for the frozen rank"
    finally:
        processes[1].kill()  # a stopped process ends on SIGKILL only
        processes[1].join()
    outcome = json.loads((run / "frozen0.json").read_text())
    assert outcome["error"].startswith("DistributedError: rank 0: training's communication with the other ranks "
                                       "failed: rank(s) 1 did not answer in time")
    assert "train.dist_timeout" in outcome["error"]
    assert outcome["seconds"] < 60  # 3 s timeout + 3 s for the ranks' reports + start-up, not torch's 30 min


def test_errors_that_are_not_lost_ranks_pass_through_unchanged():
    from adapmtl.engine.distributed import Distributed, collectives

    two_ranks = Distributed(0, 2, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="^mat1 and mat2 shapes cannot be multiplied$"):
        with collectives(two_ranks, "training's communication"):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
