"""`adapmtl bench`: runs, skips finished runs, resumes interrupted ones, aggregates over seeds."""
import json

import pytest
import yaml

from adapmtl.experiments import aggregate, load_bench, run_bench, write_outputs
from adapmtl.cli import main
from adapmtl.engine import ConfigError, train
from tests.engine_helpers import TINY


def _bench_file(tmp_path, methods=("random",), targets=(0.5,), seeds=(0,)):
    raw = {"bench": {"methods": list(methods), "targets": list(targets), "seeds": list(seeds),
                     "out_dir": str(tmp_path / "bench")}}
    for override in TINY:
        key, value = override.split("=")
        section, name = key.split(".")
        raw.setdefault(section, {})[name] = yaml.safe_load(value)
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_bench_runs_once_then_skips_finished_runs_and_resumes_interrupted_ones(tmp_path):
    bench = load_bench(_bench_file(tmp_path))
    dense, rand = bench.runs()
    assert (dense.method, rand.method, rand.target) == ("dense", "random", 0.5)
    assert rand.run_dir == tmp_path / "bench" / "random" / "t0.5" / "seed0"
    train(bench.config(rand), rand.run_dir, stop_at=4)  # an interrupted run
    lines = []
    content = run_bench(bench, echo=lines.append)
    assert lines[0] == f"run 1/2: dense seed=0: training into {dense.run_dir}"
    assert lines[2] == f"run 2/2: random target=0.5 seed=0: resuming {rand.run_dir}"
    stamps = {r.run_dir: (r.run_dir / "result.json").stat().st_mtime_ns for r in bench.runs()}
    again = []
    run_bench(load_bench(_bench_file(tmp_path)), echo=again.append)
    assert again == ["run 1/2: dense seed=0: finished, skipped", "run 2/2: random target=0.5 seed=0: finished, skipped"]
    assert stamps == {r.run_dir: (r.run_dir / "result.json").stat().st_mtime_ns for r in bench.runs()}
    assert content["missing"] == [] and [r["method"] for r in content["runs"]] == ["dense", "random"]
    for name in ("bench.md", "bench.csv", "bench.json"):
        assert (tmp_path / "bench" / name).is_file()
    assert abs(content["rows"][1]["sparsity overall"] - 50.0) <= 0.05


def _fake_result(tmp_path, folder, miou, sparsity, dense_iterations=0):
    run_dir = tmp_path / "bench" / folder
    run_dir.mkdir(parents=True)
    result = {"test": {"segment_semantic": {"miou": miou}}, "train_iterations": 100,
              "dense_iterations": dense_iterations,
              "sparsity": {"overall": sparsity, "components": {"backbone": sparsity, "segment_semantic": sparsity}}}
    (run_dir / "result.json").write_text(json.dumps(result))


def test_each_seed_is_compared_with_its_own_dense_run_then_averaged(tmp_path):
    bench = load_bench(_bench_file(tmp_path, methods=["lth"], targets=[0.9], seeds=[0, 1]))
    _fake_result(tmp_path, "dense/seed0", 50.0, 0.0)
    _fake_result(tmp_path, "dense/seed1", 40.0, 0.0)
    _fake_result(tmp_path, "lth/t0.9/seed0", 55.0, 0.9, 50)  # ΔT +10 %
    _fake_result(tmp_path, "lth/t0.9/seed1", 36.0, 0.9, 50)  # ΔT −10 %
    runs, rows = aggregate(bench)
    assert len(runs) == 4
    lth = rows[1]
    assert (lth["method"], lth["target"], lth["seeds"]) == ("lth", 0.9, 2)
    assert lth["ΔT"] == pytest.approx(0.0) and lth["ΔT std"] == pytest.approx(200 ** 0.5)
    assert lth["ΔT seg"] == pytest.approx(0.0) and lth["seg miou"] == pytest.approx(45.5)
    assert lth["sparsity backbone"] == pytest.approx(90.0) and lth["dense iters"] == 50
    write_outputs(bench)
    table = (tmp_path / "bench" / "bench.md").read_text()
    assert "| lth | 0.9 | +0.00 ± 14.14 |" in table and "| 100 | 50 |" in table
    assert "| method | 0.9 |\n|---|---|\n| lth | +0.00 ± 14.14 |" in table  # the headline pivot


def test_partial_bench_says_which_runs_are_missing(tmp_path):
    bench = load_bench(_bench_file(tmp_path, methods=["snip"], targets=[0.5, 0.9]))
    _fake_result(tmp_path, "dense/seed0", 50.0, 0.0)
    _fake_result(tmp_path, "snip/t0.5/seed0", 45.0, 0.5)
    content = write_outputs(bench)
    assert content["missing"] == ["snip target=0.9 seed=0"]
    assert "Missing 1 of 3 runs: snip target=0.9 seed=0" in (tmp_path / "bench" / "bench.md").read_text()


def test_bench_file_errors_name_the_key(tmp_path, capsys):
    path = _bench_file(tmp_path, methods=["magic"])
    with pytest.raises(ConfigError, match=r"`bench.methods`.*unknown method\(s\) \['magic'\]"):
        load_bench(path)
    with pytest.raises(ConfigError, match="bench.targets"):
        load_bench(_bench_file(tmp_path), ["bench.targets=[1.5]"])
    with pytest.raises(ConfigError, match="unknown key `train.stepz`"):
        load_bench(_bench_file(tmp_path), ["train.stepz=3"])
    plain = tmp_path / "plain.yaml"
    plain.write_text("train: {steps: 3}\n")
    assert main(["bench", "--config", str(plain)]) == 2
    assert "needs a `bench` section" in capsys.readouterr().err


def test_the_synthetic_preset_is_the_full_comparison():
    bench = load_bench("bench_synthetic")
    assert len(bench.runs()) == 2 + 11 * 3 * 2
    assert {r.method for r in bench.runs()} == {"dense", "adapmtl", "adapmtl_global", "adapmtl_layer",
                                                  "adapmtl_equal_weights", "imp", "lth", "snip", "gmp",
                                                  "disparse_static", "disparse_dynamic", "random"}
