"""The per-component sensitivity sweep on a short real run."""
import json

import pytest

from adapmtl.cli import main
from adapmtl.engine.run_eval import evaluate_run
from adapmtl.experiments import sensitivity_sweep
from adapmtl.report import ReportError, read_sensitivity, write_report
from tests.report_helpers import runs  # noqa: F401  (a session fixture)


def test_sweep_starts_at_the_unpruned_metrics_and_prunes_only_its_component(runs):
    result = sensitivity_sweep(runs["adapmtl"], "normal", [0.0, 0.5, 0.9])
    unpruned = evaluate_run(runs["adapmtl"], "val", "final")["metrics"]
    assert result.metrics[0] == unpruned  # exactly, every metric of every task
    assert result.metrics[0] == json.loads((runs["adapmtl"] / "result.json").read_text())["val"]
    assert all(values[0] == 1.0 for values in result.normalised.values())
    s0 = result.base_sparsity
    assert s0 == pytest.approx(json.loads((runs["adapmtl"] / "result.json").read_text())["sparsity"]["components"]["normal"])
    assert result.sparsity == pytest.approx([s0, s0 + (1 - s0) * 0.5, s0 + (1 - s0) * 0.9], abs=1e-4)
    # only the normal head changed: the other tasks' outputs, hence metrics, are untouched
    for point in result.metrics[1:]:
        assert point["segment_semantic"] == unpruned["segment_semantic"]
        assert point["depth_zbuffer"] == unpruned["depth_zbuffer"]
    assert result.metrics[2]["normal"] != unpruned["normal"]


def test_sweep_errors(runs):
    with pytest.raises(ReportError, match=r"no component 'head'; its components are \['backbone', "):
        sensitivity_sweep(runs["adapmtl"], "head")
    with pytest.raises(ReportError, match="increasing and in"):
        sensitivity_sweep(runs["adapmtl"], "backbone", [0.5, 0.1])


def test_sensitivity_cli_writes_what_the_report_shows(runs, tmp_path, capsys):
    folder = tmp_path / "sweeps"
    argv = ["sensitivity", str(runs["dense"]), "--component", "backbone", "--fractions", "0", "0.5", "--out", str(folder)]
    assert main(argv) == 0
    assert "backbone → normal (cosine_similarity): 0%:1.000 50%:" in capsys.readouterr().out
    assert {p.name for p in folder.iterdir()} == {"backbone.json", "backbone.png", "backbone.svg"}
    run_copy = tmp_path / "run"
    run_copy.mkdir()
    for name in ("config.yaml", "log.jsonl", "result.json", "model.safetensors"):
        (run_copy / name).write_bytes((runs["dense"] / name).read_bytes())
    folder.rename(run_copy / "sensitivity")
    assert [r.component for r in read_sensitivity(run_copy)] == ["backbone"]
    files = write_report([run_copy], tmp_path / "out")
    assert "run_sensitivity_backbone.png" in {p.name for p in files.figures}


def test_a_damaged_sweep_file_is_named(tmp_path):
    (tmp_path / "sensitivity").mkdir()
    (tmp_path / "sensitivity" / "backbone.json").write_text('{"run": "r", "component": "backbone"')
    with pytest.raises(ReportError, match=r"backbone.json is not a saved sensitivity sweep"):
        read_sensitivity(tmp_path)
    (tmp_path / "sensitivity" / "backbone.json").write_text('{"run": "r"}')
    with pytest.raises(ReportError, match=r"backbone.json is not a saved sensitivity sweep"):
        read_sensitivity(tmp_path)
