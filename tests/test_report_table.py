"""The paper-style comparison table from result dicts."""
import pytest

from adapmtl.report import comparison_rows, markdown_table


def _result(miou, acc, depth, sparsity):
    return {"test": {"segment_semantic": {"miou": miou, "pixel_acc": acc}, "depth_zbuffer": {"abs_err": depth}},
            "sparsity": {"overall": sparsity, "components": {"backbone": sparsity / 2, "segment_semantic": sparsity}}}


def test_rows_hold_metrics_delta_t_and_sparsity():
    rows = comparison_rows({"dense": _result(19.94, 48.71, 0.5, 0.0), "snip": _result(18.96, 46.93, 0.6, 0.9)}, "dense")
    snip = rows[1]
    assert snip["ΔT seg"] == pytest.approx(-8.569, abs=1e-3)  # REFERENCE §5's example
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
