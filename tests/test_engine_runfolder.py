"""Run folders survive kills, damage and a second process: through train() and resume()."""
import json
import os

import pytest
import torch

from adapmtl.engine import resume, train
from adapmtl.engine.checkpoint import CheckpointError, load_checkpoint, save_atomic
from adapmtl.engine.distributed import Distributed
from adapmtl.engine.logger import RunWarning, read_log
from adapmtl.engine.runlock import RunFolderBusyError, lock_run_dir
from tests.engine_helpers import tiny_config

ONE_PROCESS = Distributed(0, 1, torch.device("cpu"))


def _train_steps(run):
    return [r["step"] for r in read_log(run) if "loss" in r]


def test_resume_deletes_what_a_killed_save_left(tmp_path):
    train(tiny_config(tmp_path, "name=r"), stop_at=4)
    run = tmp_path / "r"
    debris = [run / "checkpoints" / ".last.pt.k1ll3d.tmp", run / ".result.json.x7.tmp", run / ".log.jsonl.a.tmp"]
    for path in debris:
        path.write_bytes(b"half")
    resume(run, stop_at=8)
    assert not any(path.exists() for path in debris)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 8


def test_a_flipped_byte_in_last_pt_stops_the_resume(tmp_path):
    train(tiny_config(tmp_path, "name=rot"), stop_at=4)
    last = tmp_path / "rot" / "checkpoints" / "last.pt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0x10
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"cannot resume .*rot: checkpoint .*last\.pt is damaged"):
        resume(tmp_path / "rot")


def test_a_damaged_best_pt_finishes_on_the_last_weights_with_a_warning(tmp_path):
    train(tiny_config(tmp_path, "name=b"), stop_at=12)  # every step done, not finished yet
    run = tmp_path / "b"
    assert load_checkpoint(run / "checkpoints" / "best.pt")["step"] in (8, 12)
    (run / "checkpoints" / "best.pt").write_bytes(b"bit rot")
    with pytest.warns(RunWarning, match="best.pt is unreadable"):
        result = resume(run)
    assert result["selected_step"] == 12
    assert len(result["warnings"]) == 1 and "finished on the weights of the last step (12)" in result["warnings"][0]
    assert json.loads((run / "result.json").read_text())["warnings"] == result["warnings"]
    assert abs(result["sparsity"]["overall"] - 0.8) <= 0.0005


def test_a_kill_while_resume_trims_the_log_loses_no_history(tmp_path, monkeypatch):
    train(tiny_config(tmp_path, "name=log"), stop_at=6)
    run = tmp_path / "log"
    with (run / "log.jsonl").open("a") as log:
        log.write('{"step": 8, "loss": {"de')  # a torn record: the process was killed while appending it

    def dying_fsync(fd):  # the rewritten log is in its temporary file; the process "dies" before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr("os.fsync", dying_fsync)
    with pytest.raises(KeyboardInterrupt):
        resume(run)
    monkeypatch.undo()
    assert _train_steps(run) == [1, 2, 4, 6]
    assert not list(run.glob(".*.tmp"))
    resume(run)
    assert _train_steps(run) == [1, 2, 4, 6, 8, 10, 12]


def test_a_kill_while_finishing_leaves_no_half_model_or_result(tmp_path, monkeypatch):
    train(tiny_config(tmp_path, "name=f"), stop_at=12)
    run = tmp_path / "f"
    real_fsync = os.fsync

    def dying_on_the_model(fd):
        if ".model.safetensors." in os.readlink(f"/proc/self/fd/{fd}"):
            raise KeyboardInterrupt
        real_fsync(fd)

    monkeypatch.setattr("os.fsync", dying_on_the_model)
    with pytest.raises(KeyboardInterrupt):
        resume(run)
    monkeypatch.undo()
    assert not (run / "model.safetensors").exists() and not (run / "result.json").exists()
    assert resume(run)["selected_step"] in (8, 12)
    assert (run / "model.safetensors").is_file()


def test_a_second_training_in_a_busy_run_folder_is_refused(tmp_path):
    train(tiny_config(tmp_path, "name=busy"), stop_at=4)
    run = tmp_path / "busy"
    with lock_run_dir(run, ONE_PROCESS):  # what another process's training holds for its whole run
        with pytest.raises(RunFolderBusyError, match=rf"busy is in use by another training \(process {os.getpid()} "):
            resume(run)
        # the same train command again: "in use", not "already holds a run; resume it"
        with pytest.raises(RunFolderBusyError, match="busy is in use by another training"):
            train(tiny_config(tmp_path, "name=busy"))
    assert resume(run, stop_at=8) is None  # released when its holder ends
    assert _train_steps(run) == [1, 2, 4, 6, 8]


def test_a_last_pt_of_another_run_names_the_file_and_the_mismatch(tmp_path):
    train(tiny_config(tmp_path, "name=narrow"), stop_at=2)
    train(tiny_config(tmp_path, "name=wide", "model.width=0.25"), stop_at=2)
    narrow = load_checkpoint(tmp_path / "narrow" / "checkpoints" / "last.pt")
    last = tmp_path / "wide" / "checkpoints" / "last.pt"
    save_atomic(narrow, last)
    with pytest.raises(CheckpointError, match=r"last\.pt was written by another run or config \(model\.width: "
                                              r"checkpoint 0\.125, now 0\.25\)"):
        resume(tmp_path / "wide")
    del narrow["config"]  # as checkpoints before the config was recorded
    save_atomic(narrow, last)
    with pytest.raises(CheckpointError, match=r"last\.pt does not fit this run's model .*shape \("):
        resume(tmp_path / "wide")


def test_resuming_on_another_number_of_processes_says_what_changes(tmp_path):
    train(tiny_config(tmp_path, "name=ws"), stop_at=4)
    last = tmp_path / "ws" / "checkpoints" / "last.pt"
    checkpoint = load_checkpoint(last)
    assert checkpoint["world_size"] == 1
    checkpoint["world_size"] = 2  # as a 2-process run under torchrun writes it
    save_atomic(checkpoint, last)
    with pytest.warns(RunWarning, match=r"written by a run on 2 process\(es\) and resumes on 1"):
        result = resume(tmp_path / "ws")
    assert len(result["warnings"]) == 1
    assert "each process now computes 4 of them instead of 2" in result["warnings"][0]
    assert [r["step"] for r in read_log(tmp_path / "ws") if "warning" in r] == [4]
