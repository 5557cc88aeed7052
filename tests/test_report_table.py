"""The paper-style comparison table from result dicts."""
import pytest

from adapmtl.report import comparison_rows, format_cell, markdown_table


def _result(miou, acc, depth, sparsity):
    return {"test": {"segment_semantic": {"miou": miou, "pixel_acc": acc}, "depth_zbuffer": {"abs_err": depth}},
            "sparsity": {"overall": sparsity, "components": {"backbone": sparsity / 2, "segment_semantic": sparsity}}}


def test_rows_hold_metrics_delta_t_and_sparsity():
    rows = comparison_rows({"dense": _result(19.94, 48.71, 0.5, 0.0), "snip": _result(18.96, 46.93, 0.6, 0.9)}, "dense")
    snip = rows[1]
    assert snip["ΔT seg"] == pytest.approx(-8.569, abs=1e-3)  # docs/method.md §4: the paper's example
    assert snip["ΔT depth"] == pytest.approx(-20.0)  # lower is better: 0.5 -> 0.6 is -20 %
    assert snip["ΔT"] == pytest.approx((-8.569 - 20.0) / 2, abs=1e-3)
    assert snip["sparsity backbone"] == pytest.approx(45.0) and snip["sparsity overall"] == pytest.approx(90.0)
    table = markdown_table(rows)
    assert table.splitlines()[0].startswith("| run | seg miou | seg pixel_acc | ΔT seg |")
    assert "| snip | 18.96 | 46.93 | -8.57 |" in table
    assert "| ΔT | +0.00 | -14.28 |" in markdown_table(rows, transpose=True)


def test_undefined_delta_t_is_reported_not_raised():
    rows = comparison_rows({"dense": _result(0.0, 48.71, 0.5, 0.0), "x": _result(1.0, 50.0, 0.5, 0.9)}, "dense")
    assert rows[1]["ΔT"] is None and "is 0" in rows[1]["note"]
    assert "n/a" in markdown_table(rows)


def test_one_cell_format_for_report_and_bench():
    assert format_cell("ΔT seg", 1.5) == "+1.50" and format_cell("ΔT", -0.004) == "-0.00"
    assert format_cell("seg miou", 45.5, std=14.142) == "45.50 ± 14.14"
    assert format_cell("ΔT", 0.0, std=14.142) == "+0.00 ± 14.14"
    assert format_cell("train iters", 100.0, digits=0) == "100" and format_cell("seeds", 2) == "2"
    assert format_cell("ΔT", None, std=1.0) == "n/a"


def test_chosen_columns_in_order_with_n_a_for_missing_keys():
    table = markdown_table([{"run": "a", "x": 1.0, "y": 2.0}], columns=["y", "run", "z"])
    assert table.splitlines() == ["| y | run | z |", "|---|---|---|", "| 2.00 | a | n/a |"]
    assert markdown_table([], columns=["method", "ΔT"]) == "| method | ΔT |\n|---|---|"


def test_delta_t_across_conventions_is_refused_with_the_reason():
    from adapmtl.report.table import comparison_rows

    metrics = {"depth_zbuffer": {"abs_err": 0.5}}
    results = {"dense": {"test": metrics, "sparsity": {"overall": 0.0, "components": {}}, "convention": "paper"},
               "sparse": {"test": {"depth_zbuffer": {"abs_err": 0.4}}, "sparsity": {"overall": 0.9, "components": {}},
                          "convention": "corrected"},
               "same": {"test": {"depth_zbuffer": {"abs_err": 0.4}}, "sparsity": {"overall": 0.9, "components": {}},
                        "convention": "paper"}}
    rows = {row["run"]: row for row in comparison_rows(results, "dense")}
    assert rows["sparse"]["ΔT"] is None and "'corrected' convention and the baseline's the 'paper'" in rows["sparse"]["note"]
    assert abs(rows["same"]["ΔT"] - 20.0) < 1e-9  # abs_err 0.5 -> 0.4: 20 % better
