"""Expected failures reach a CLI user as one line naming the file or key, with a non-zero exit (issue 12 C)."""
import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from adapmtl.cli import describe_failure, main
from tests.engine_helpers import TINY


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_a_malformed_override_is_one_line(capsys):
    assert main(["train", "--config", "quickstart", "train.steps=[1,"]) == 2
    assert _one_line(capsys.readouterr().err).startswith("adapmtl train: error: override 'train.steps=[1,': the value is not "
                                                         "valid YAML")


def test_debug_shows_the_traceback():
    from adapmtl.engine import ConfigError

    with pytest.raises(ConfigError, match="not valid YAML"):
        main(["--debug", "train", "--config", "quickstart", "train.steps=[1,"])


def test_an_output_folder_that_cannot_be_made_is_one_line_naming_it(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["train", "--config", "quickstart", f"out_dir={blocker}", "name=r", *TINY]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == f"adapmtl train: error: cannot write {blocker / 'r'}: a file stands where a folder is needed; " \
                   "choose another folder"
    assert main(["data", "synth", "--out", str(blocker / "data"), "--n", "4", "--size", "8", "8"]) == 2
    assert str(blocker) in _one_line(capsys.readouterr().err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line(tmp_path, capsys):
    tmp_path.chmod(0o500)
    try:
        assert main(["train", "--config", "quickstart", f"out_dir={tmp_path}", "name=r", *TINY]) == 2
    finally:
        tmp_path.chmod(0o700)
    assert "cannot write" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("error, expected", [
    (OSError(errno.ENOSPC, "No space left on device", "/runs/r/checkpoints/last.pt"),
     "error: the disk is full (writing /runs/r/checkpoints/last.pt); free some space and run the command again"),
    (PermissionError(errno.EACCES, "Permission denied", "/runs/r"),
     "error: cannot write /runs/r: Permission denied; choose a writable folder"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro"),
     "error: cannot write /mnt/ro: Read-only file system; choose a writable folder"),
])
def test_io_failures_are_described(error, expected):
    assert describe_failure(error) == (expected, 2)


def test_ctrl_c_during_training_says_how_to_continue(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "adapmtl", "train", "--config", "quickstart", "--run-dir", str(run), *TINY,
               "train.steps=100000", "train.checkpoint_every=2"]
    # a test run started in the background inherits an ignored SIGINT, and so would the child: restore it
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert _one_line(err) == (f"adapmtl train: interrupted; `adapmtl train --resume {run}` continues exactly from "
                              "its last checkpoint (train.checkpoint_every; none if it stopped before the first)")


def _finished_run(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--config", "quickstart", "--run-dir", str(run), *TINY, "train.steps=4"]) == 0
    return run


def test_a_truncated_model_file_is_one_line_under_eval_and_init_from(tmp_path, capsys):
    run = _finished_run(tmp_path)
    model = run / "model.safetensors"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    assert f"{model} is damaged or not a safetensors file" in _one_line(capsys.readouterr().err)
    assert main(["train", "--config", "quickstart", "--run-dir", str(tmp_path / "next"), *TINY,
                 f"train.init_from={run}"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "`train.init_from`" in line and f"{model} is damaged" in line
    assert not (tmp_path / "next").exists()


def test_export_and_compile_name_what_is_missing(tmp_path, capsys):
    for command in (["export", "--format", "dense"], ["compile", "--rounds", "1"]):
        assert main([command[0], str(tmp_path / "nowhere"), *command[1:]]) == 2
        assert f"run folder {tmp_path / 'nowhere'} does not exist" in _one_line(capsys.readouterr().err)
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert _one_line(capsys.readouterr().err) == f"adapmtl train: error: run folder {tmp_path / 'nowhere'} does not exist"


def test_a_full_disk_while_saving_names_the_file(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.setattr("adapmtl.files.os.fdopen", lambda fd, mode: _FullFile(fd))
    assert main(["train", "--config", "quickstart", "--run-dir", str(run), *TINY]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == f"adapmtl train: error: the disk is full (writing {run / 'config.yaml'}); free some space and run " \
                   "the command again"
    assert not list(run.glob(".*.tmp"))  # the temporary file is gone


class _FullFile:
    """A file whose writes fail as on a full disk."""

    def __init__(self, fd):
        os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_flipped_byte_in_the_model_file_is_caught(tmp_path, capsys):
    run = _finished_run(tmp_path)
    model = run / "model.safetensors"
    data = bytearray(model.read_bytes())
    data[-10] ^= 0x01  # inside the last tensor's bytes, past the header
    model.write_bytes(bytes(data))
    capsys.readouterr()
    for command in (["eval", str(run)], ["export", str(run), "--format", "dense"]):
        assert main(command) == 2
        assert f"{model}: checksum mismatch" in _one_line(capsys.readouterr().err)


def test_config_errors_are_one_line_naming_the_key(capsys):
    assert main(["train", "--config", "quickstart", *TINY, "train.device=gpu", "data.crop=[0,8]"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("adapmtl train: error: `data.crop.0`: Input should be greater than 0 (got 0); "
                           "`train.device`: 'gpu' is not a device")
    assert line.endswith("quickstart.yaml and the overrides)")


def test_a_path_through_a_file_or_onto_a_folder_says_what_to_do(tmp_path, capsys):
    run = _finished_run(tmp_path)
    capsys.readouterr()
    assert main(["export", str(run), "--format", "dense", "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a folder; give the file to write" in _one_line(capsys.readouterr().err)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["export", str(run), "--format", "dense", "--out", str(blocker / "m.safetensors")]) == 2
    assert _one_line(capsys.readouterr().err) == (f"adapmtl export: error: cannot write {blocker / 'm.safetensors'}: "
                                                  "a file stands where a folder is needed; choose another folder")


@pytest.mark.parametrize("command", [["data", "synth", "--out", "{tmp}/d", "--size", "0", "8"],
                                     ["data", "synth", "--out", "{tmp}/d", "--n", "2"],
                                     ["compile", "{tmp}", "--threads", "0"]])
def test_bad_sizes_and_counts_are_refused_before_anything_is_written(tmp_path, capsys, command):
    code = _run_main([part.format(tmp=tmp_path) for part in command])
    assert code == 2
    assert not (tmp_path / "d").exists()


def _run_main(argv):
    try:
        return main(argv)
    except SystemExit as exit:  # argparse refuses a bad argument with exit code 2
        return exit.code


def test_stop_at_says_how_to_continue_and_resume_without_checkpoint_says_how_to_restart(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", "quickstart", "--run-dir", str(run), *TINY, "--stop-at", "2"]) == 0
    assert f"stopped after step 2; `adapmtl train --resume {run}` continues" in capsys.readouterr().out
    (run / "checkpoints" / "last.pt").unlink()
    assert main(["train", "--resume", str(run)]) == 2
    assert f"it has no checkpoint ({run / 'checkpoints' / 'last.pt'}); train it again from the start" in \
        _one_line(capsys.readouterr().err)


def test_quickstart_refuses_to_mix_runs_made_with_other_settings(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path), *TINY]) == 0
    capsys.readouterr()
    assert main(["quickstart", "--out", str(tmp_path), *TINY, "model.width=0.25"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{tmp_path / 'dense'} holds a run made with other settings (model.width: run 0.125, now 0.25)" in line
