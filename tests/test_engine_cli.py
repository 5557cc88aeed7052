"""The `adapmtl` command: train, resume, eval and quickstart, run in-process."""
import json

from adapmtl.cli import main
from tests.engine_helpers import TINY


def test_train_stop_resume_and_eval_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", "quickstart", "--run-dir", str(run), "--stop-at", "4", *TINY]) == 0
    assert not (run / "result.json").exists()
    assert main(["train", "--resume", str(run)]) == 0
    result = json.loads((run / "result.json").read_text())
    assert abs(result["sparsity"]["overall"] - 0.8) <= 0.0005
    capsys.readouterr()
    assert main(["eval", str(run), "--split", "test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["metrics"]["depth_zbuffer"]["abs_err"] == result["test"]["depth_zbuffer"]["abs_err"]


def test_bad_input_is_a_message_and_exit_code_2(tmp_path, capsys):
    assert main(["train", "--config", "quickstart", "train.steps=zero"]) == 2
    assert "`train.steps`: Input should be a valid integer" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert main(["eval", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_quickstart_prints_the_comparison_table(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path), *TINY]) == 0
    out = capsys.readouterr().out
    assert "| seg miou |" in out and "| ΔT |" in out and "| sparsity overall | 0.00 | 80.00 |" in out
    assert (tmp_path / "adapmtl" / "model.safetensors").is_file() and (tmp_path / "table.md").is_file()
    assert main(["quickstart", "--out", str(tmp_path), *TINY]) == 0  # finished runs are reused
    assert "reusing it" in capsys.readouterr().out
