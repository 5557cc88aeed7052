"""Checkpoint files: atomic writes, a checksum that catches any changed byte, clear errors."""
import pytest
import torch

from adapmtl.engine.checkpoint import (CheckpointError, UnverifiedCheckpointWarning, config_differences,
                                       load_checkpoint, load_model_state, save_atomic)


def test_a_save_killed_midway_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"model": {"w": torch.ones(3)}, "step": 1}, path)

    def dying_fsync(fd):  # every byte is in the temporary file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr("os.fsync", dying_fsync)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"model": {"w": torch.zeros(3)}, "step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_any_changed_byte_is_a_checkpoint_error_naming_the_file(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"model": {"w": torch.arange(20.0)}, "step": 7}, path)
    original = path.read_bytes()
    for position in range(len(original)):
        damaged = bytearray(original)
        damaged[position] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match=r"last\.pt is (damaged|unreadable)"):
            load_checkpoint(path)
    path.write_bytes(original)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.arange(20.0))


def test_truncated_foreign_missing_and_old_files(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"model": {"w": torch.ones(100)}, "step": 1}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="last.pt is damaged: its content does not match the SHA-256"):
        load_checkpoint(path)
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt is unreadable: it is neither an adapmtl checkpoint"):
        load_checkpoint(tmp_path / "notes.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    # written before checksums: plain torch.save files load, with a warning
    torch.save({"model": {"w": torch.ones(2)}, "step": 3}, tmp_path / "old.pt")
    with pytest.warns(UnverifiedCheckpointWarning, match="old.pt has no checksum"):
        assert load_checkpoint(tmp_path / "old.pt")["step"] == 3
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.warns(UnverifiedCheckpointWarning), pytest.raises(CheckpointError, match="not an adapmtl checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_a_state_of_another_shape_names_the_file_and_the_entry(tmp_path):
    model = torch.nn.Linear(3, 2)
    before = model.weight.clone()
    wide = {**torch.nn.Linear(4, 2).state_dict(), "extra": torch.ones(1)}
    with pytest.raises(CheckpointError, match=r"wide\.pt does not fit this run's model .*: extra unexpected; "
                                              r"weight: shape \(2, 4\) in the checkpoint, \(2, 3\) in the model$"):
        load_model_state(model, wide, tmp_path / "wide.pt")
    assert torch.equal(model.weight, before)  # bias fits, but nothing was copied
    with pytest.raises(CheckpointError, match=r"wide\.pt does not fit .*: bias missing$"):
        load_model_state(model, {"weight": torch.zeros(2, 3)}, tmp_path / "wide.pt")


def test_config_differences_ignore_where_a_run_runs_and_fields_of_other_versions():
    saved = {"name": "a", "seed": 0, "model": {"width": 0.5}, "train": {"device": "cuda", "steps": 10, "gone": 1}}
    now = {"name": "b", "seed": 1, "model": {"width": 0.25}, "train": {"device": "cpu", "steps": 10, "new": 2}}
    assert config_differences(saved, now) == ["model.width: checkpoint 0.5, now 0.25", "seed: checkpoint 0, now 1"]
    assert config_differences(None, now) == []
