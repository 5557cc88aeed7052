"""bench.md's section on how the threshold runs reached their sparsity (adapmtl.experiments.mechanism)."""
import pytest

from adapmtl.experiments.mechanism import mechanism_rows, mechanism_table


def _run(method, target, seed, interventions, shift, learned, allocation):
    controller = {"measurements": 100, "interventions": interventions, "total_shift": shift, "learned": learned}
    return {"method": method, "target": target, "seed": seed,
            "result": {"controller": controller,
                       "allocation": {c: {"sparsity": s, "global": g} for c, (s, g) in allocation.items()}}}


def test_mechanism_rows_average_over_seeds_and_skip_the_mask_methods():
    runs = [
        _run("adapmtl", 0.9, 0, 4, 1.0, {"backbone": 0.5, "head": -2.0}, {"backbone": (0.8, 0.9), "head": (0.95, 0.9)}),
        _run("adapmtl", 0.9, 1, 6, 2.0, {"backbone": 1.5, "head": -3.0}, {"backbone": (0.9, 0.9), "head": (0.97, 0.9)}),
        {"method": "snip", "target": 0.9, "seed": 0, "result": {"sparsity": {}}},  # no controller: left out
    ]
    (row,) = mechanism_rows(runs)
    assert (row["method"], row["target"], row["seeds"]) == ("adapmtl", 0.9, 2)
    assert (row["interventions"], row["measurements"], row["total shift"]) == (5.0, 100.0, 1.5)
    assert row["learned"] == (0.5, 3.0)  # |movement| over components and seeds
    assert row["components"]["backbone"] == pytest.approx((85.0, 90.0))
    assert abs(row["components"]["head"][0] - 96.0) < 1e-9
    table = mechanism_table(runs)
    assert "| adapmtl | 0.9 | 2 | 5.0 of 100 | 1.50 | 0.50–3.00 | 85.0 / 90.0 | 96.0 / 90.0 |" in table
    assert mechanism_table(runs[2:]) == ""
