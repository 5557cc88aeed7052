"""The report from short real runs: tables hold the runs' numbers, figures and HTML exist."""
import csv
import json
import shutil

import pytest

from adapmtl.cli import main
from adapmtl.metrics import delta_t
from adapmtl.report import ReportError, RunRecord, delta_t_points, load_run, write_report
from tests.report_helpers import runs  # noqa: F401  (a session fixture)

RUN_KINDS = ("sparsity", "thresholds", "allocation", "task_weights", "losses", "layer_sparsity")


def test_report_of_dense_and_adapmtl(runs, tmp_path):
    files = write_report([runs["dense"].parent], tmp_path / "out")
    dense = json.loads((runs["dense"] / "result.json").read_text())
    sparse = json.loads((runs["adapmtl"] / "result.json").read_text())

    rows = list(csv.DictReader(files.table_csv.open()))
    assert [r["run"] for r in rows] == ["dense", "adapmtl"]  # the baseline first
    row = rows[1]
    assert float(row["seg cross_entropy"]) == sparse["test"]["segment_semantic"]["cross_entropy"]
    assert float(row["depth abs_err"]) == sparse["test"]["depth_zbuffer"]["abs_err"]
    assert float(row["sparsity overall"]) == pytest.approx(100 * sparse["sparsity"]["overall"])
    assert float(row["sparsity backbone"]) == pytest.approx(100 * sparse["sparsity"]["components"]["backbone"])
    assert float(row["ΔT"]) == pytest.approx(delta_t(sparse["test"], dense["test"]).overall)
    assert float(rows[0]["ΔT"]) == 0.0
    assert f"| adapmtl | {sparse['test']['segment_semantic']['cross_entropy']:.2f} |" in files.table_md.read_text()

    names = {p.name for p in files.figures}
    for kind in RUN_KINDS:
        assert {f"adapmtl_{kind}.png", f"adapmtl_{kind}.svg"} <= names
    assert "dense_losses.png" in names and "dense_task_weights.png" in names
    assert not {"dense_thresholds.png", "dense_sparsity.png", "dense_layer_sparsity.png", "dense_allocation.png"} & names
    assert "delta_t_vs_sparsity.png" in names
    assert all(p.stat().st_size > 5000 for p in files.figures)

    page = files.html.read_text()
    assert page.count('src="data:image/png;base64,') == len(files.figures) // 2
    assert "http://" not in page and "https://" not in page  # nothing external to fetch
    assert f"{sparse['test']['depth_zbuffer']['abs_err']:.2f}" in page
    controller = sparse["controller"]  # the run's account: interventions and the learned allocation
    assert (f"The controller stepped in at {controller['interventions']} of its {controller['measurements']} "
            "measurements") in page
    backbone = sparse["allocation"]["backbone"]
    assert f"<td>backbone</td><td>{100 * backbone['sparsity']:.2f}</td><td>{100 * backbone['global']:.2f}</td>" in page


def test_allocation_rows_and_intervention_ticks_come_from_the_run():
    from adapmtl.report.build import allocation_rows
    from adapmtl.report.plots import interventions

    result = {"allocation": {"backbone": {"sparsity": 0.8, "global": 0.9}, "seg": {"sparsity": 0.95, "global": 0.85}},
              "controller": {"learned": {"backbone": -1.5, "seg": 0.5}}}
    rows = allocation_rows(result)
    assert [(r["component"], r["learned − global (pp)"], r["score's own learning"]) for r in rows] == \
        [("backbone", pytest.approx(-10.0), -1.5), ("seg", pytest.approx(10.0), 0.5)]
    records = [{"step": s, "controller": {"interventions": n}} for s, n in ((10, 0), (20, 1), (30, 1), (40, 3))]
    assert interventions(records) == [20, 40]


def test_unfinished_run_still_gets_its_curves(runs, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs["adapmtl"], unfinished, ignore=shutil.ignore_patterns("result.json", "model.safetensors"))
    files = write_report([unfinished], tmp_path / "out")
    assert files.table_md is None and "unfinished" in files.html.read_text()
    assert {p.stem for p in files.figures} == {f"unfinished_{k}" for k in RUN_KINDS if k not in ("layer_sparsity", "allocation")}


def _fake(method, target, seed, sparsity, miou, path):
    result = {"method": method, "target": target, "test": {"segment_semantic": {"miou": miou}},
              "sparsity": {"overall": sparsity, "components": {}}}
    return RunRecord(path, f"{method}_{target}_{seed}", {"seed": seed}, [], result)


def test_delta_t_points_average_seeds(tmp_path):
    dense = _fake("dense", 0.0, 0, 0.0, 20.0, tmp_path / "d")
    runs = [dense, _fake("adapmtl", 0.9, 0, 0.9, 22.0, tmp_path / "a0"), _fake("adapmtl", 0.9, 1, 0.9, 18.0, tmp_path / "a1"),
            _fake("snip", 0.9, 0, 0.9, 10.0, tmp_path / "s")]
    points = delta_t_points(runs, dense)
    assert points["adapmtl"] == [{"target": 0.9, "sparsity": 90.0, "sparsity_std": 0.0, "delta_t": 0.0,
                                  "delta_t_std": pytest.approx(14.142, abs=1e-3), "n": 2}]
    assert points["snip"][0]["delta_t"] == pytest.approx(-50.0)


def test_report_cli_and_errors(runs, tmp_path, capsys):
    assert main(["report", str(runs["adapmtl"]), "--baseline", str(runs["dense"]), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("|  | dense (baseline) | adapmtl |") and f"report: {tmp_path / 'report.html'}" in out
    assert main(["report", str(runs["adapmtl"]), "--baseline", "nope", "--out", str(tmp_path)]) == 2
    assert "baseline 'nope' is neither a run folder nor one of the runs" in capsys.readouterr().err
    with pytest.raises(ReportError, match="is not a run folder"):
        load_run(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_figure_names_keep_dots(tmp_path):
    from matplotlib.figure import Figure

    from adapmtl.report import save_figure

    assert [p.name for p in save_figure(Figure(), tmp_path / "adapmtl_t0.9_s0_sparsity")] == [
        "adapmtl_t0.9_s0_sparsity.png", "adapmtl_t0.9_s0_sparsity.svg"]
