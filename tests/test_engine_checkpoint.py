"""Atomic checkpoints: an interrupted save leaves the previous file intact and no debris."""
import pytest
import torch

from adapmtl.engine.checkpoint import CheckpointError, load_checkpoint, save_atomic


def test_a_save_killed_midway_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"model": {"w": torch.ones(3)}, "step": 1}, path)
    real_save = torch.save

    def dying_save(obj, file):
        real_save({"model": {"w": torch.zeros(1000)}}, file)  # bytes hit the disk, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"model": {"w": torch.zeros(3)}, "step": 2}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_truncated_or_foreign_files_are_clear_errors(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"model": {"w": torch.ones(100)}, "step": 1}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="last.pt is unreadable"):
        load_checkpoint(path)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an adapmtl checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
