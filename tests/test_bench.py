"""`adapmtl bench`: runs, skips finished runs, resumes interrupted ones, aggregates over seeds."""
import json
from pathlib import Path

import pytest
import yaml

from adapmtl.experiments import aggregate, analyse, component_numel, cross_evaluate, load_bench, run_bench, write_outputs
from adapmtl.experiments.stats import verdict
from adapmtl.cli import main
from adapmtl.engine import ConfigError, RunDir, train
from adapmtl.metrics import delta_t
from tests.engine_helpers import TINY


def _bench_file(tmp_path, methods=("random",), targets=(0.5,), seeds=(0,), **section):
    raw = {"bench": {"methods": list(methods), "targets": list(targets), "seeds": list(seeds),
                     "out_dir": str(tmp_path / "bench"), "convergence": None, **section}}
    for override in TINY:
        key, value = override.split("=")
        section, name = key.split(".")
        raw.setdefault(section, {})[name] = yaml.safe_load(value)
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_bench_runs_once_then_skips_finished_runs_and_resumes_interrupted_ones(tmp_path):
    path = _bench_file(tmp_path, convergence=2, min_head_share=0.1)
    bench = load_bench(path)
    dense, dense_x2, rand = bench.runs()
    assert (dense.method, rand.method, rand.target) == ("dense", "random", 0.5)
    assert rand.run_dir == tmp_path / "bench" / "random" / "t0.5" / "seed0"
    assert dense_x2.run_dir == tmp_path / "bench" / "dense_x2" / "seed0"
    # the convergence run doubles the budget and its schedule: TINY has 12 steps, lr halved every 6
    assert (bench.config(dense_x2).train.steps, bench.config(dense_x2).train.lr_step) == (24, 12)
    assert (bench.config(dense).train.steps, bench.config(dense).train.lr_step) == (12, 6)
    train(bench.config(rand), rand.run_dir, stop_at=4)  # an interrupted run
    lines = []
    content = run_bench(bench, echo=lines.append)
    assert lines[0] == "heads hold 14.5 % of the 389,784 prunable weights"
    assert lines[1] == f"run 1/3: dense seed=0: training into {dense.run_dir}"
    assert lines[3] == f"run 2/3: dense x2 steps seed=0: training into {dense_x2.run_dir}"
    # after the dense runs, before the others: the sanity checks (one seed: no noise floor)
    assert lines[5].startswith("check: heads' share of prunable weights: 14.5 %") and lines[5].endswith("[pass]")
    assert lines[6] == "check: noise floor: not measured [not checked]"
    assert lines[9].startswith("setting not fully checked: no noise floor")
    assert lines[10] == f"run 3/3: random target=0.5 seed=0: resuming {rand.run_dir}"
    stamps = {r.run_dir: (r.run_dir / "result.json").stat().st_mtime_ns for r in bench.runs()}
    again = []
    run_bench(load_bench(path), echo=again.append)
    assert again[1:3] == ["run 1/3: dense seed=0: finished, skipped", "run 2/3: dense x2 steps seed=0: finished, skipped"]
    assert again[-1] == "run 3/3: random target=0.5 seed=0: finished, skipped"
    assert stamps == {r.run_dir: (r.run_dir / "result.json").stat().st_mtime_ns for r in bench.runs()}
    assert content["missing"] == [] and [r["method"] for r in content["runs"]] == ["dense", "dense", "random"]
    for name in ("bench.md", "bench.csv", "bench.json"):
        assert (tmp_path / "bench" / name).is_file()
    assert abs(content["rows"][2]["sparsity overall"] - 50.0) <= 0.05
    assert content["analysis"]["numel"]["segment_semantic"] == 4 * (9 * 64 * 8 + 8 * 8 + 8 * 8)
    # the same bench with other settings would mix two experiments into one table: refused by name
    with pytest.raises(ConfigError, match=r"dense/seed0 holds a run made with other settings \(train.lr: run 0.001, "
                                          r"now 0.002\)"):
        load_bench(path, ["train.lr=0.002"])


def test_several_jobs_train_runs_in_worker_processes_with_the_same_results(tmp_path):
    bench = load_bench(_bench_file(tmp_path, jobs=2, threads=1))
    dense, rand = bench.runs()
    lines = []
    run_bench(bench, echo=lines.append)
    assert f"run 2/2: random target=0.5 seed=0: queued for training into {rand.run_dir}" in lines
    assert RunDir(dense.run_dir).finished and RunDir(rand.run_dir).finished
    alone = tmp_path / "alone"
    train(bench.config(rand), alone)  # the same run in this process: the same model, the same scores
    assert RunDir(rand.run_dir).result()["test"] == RunDir(alone).result()["test"]


def test_the_noise_floor_evaluates_each_dense_model_on_the_other_seeds_test_set(tmp_path):
    # tiny runs score 0 % on some normal and depth metrics, where ΔT is undefined: segmentation only
    bench = load_bench(_bench_file(tmp_path, seeds=[0, 1]), ["data.tasks=[segment_semantic]"])
    dense = bench.dense_runs()
    for run in dense.values():
        train(bench.config(run), run.run_dir)
    lines = []
    assert cross_evaluate(bench, echo=lines.append) == 2
    assert cross_evaluate(bench, echo=lines.append) == 0  # kept: a resumed bench does not redo them
    assert lines == ["noise floor: dense seed=1 evaluated on the test set of seed=0",
                     "noise floor: dense seed=0 evaluated on the test set of seed=1"]
    on_test0 = json.loads(bench.cross_file(1, 0).read_text())["test"]
    own = {s: RunDir(r.run_dir).result()["test"] for s, r in dense.items()}
    # seed 1's model on seed 0's scenes: not what it scored on its own test set
    assert on_test0 != own[1] and on_test0.keys() == own[0].keys()
    analysis = analyse(bench)
    expected = [delta_t(on_test0, own[0]).overall,
                delta_t(json.loads(bench.cross_file(0, 1).read_text())["test"], own[1]).overall]
    assert analysis.noise_floor == pytest.approx(((expected[0] ** 2 + expected[1] ** 2) / 2) ** 0.5)


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
    # the headline pivot: mean [t interval], t(0.975, 1) = 12.706, s/√2 = 10
    assert "| method | 0.9 |\n|---|---|\n| lth | +0.00 [-127.06, +127.06] |" in table


def _sane_bench(tmp_path, dense_x2=(50.5, 49.5, 50.5), rand=(40.0, 41.0, 39.0), min_head_share=0.1,
                max_noise_floor=10.0):
    """Three seeds of fake results: dense 50 mIoU; dense models cross-evaluated at 51 / 49 (ΔT ±2:
    noise floor 2); lth at 45, 46, 44 (ΔT −10, −8, −12); random and dense at 2× steps as given."""
    bench = load_bench(_bench_file(tmp_path, methods=["random", "lth"], targets=[0.9], seeds=[0, 1, 2],
                                   convergence=2, min_head_share=min_head_share, compare_to="lth",
                                   max_noise_floor=max_noise_floor))
    for seed in range(3):
        _fake_result(tmp_path, f"dense/seed{seed}", 50.0, 0.0)
        _fake_result(tmp_path, f"dense_x2/seed{seed}", dense_x2[seed], 0.0)
        _fake_result(tmp_path, f"random/t0.9/seed{seed}", rand[seed], 0.9)
        _fake_result(tmp_path, f"lth/t0.9/seed{seed}", (45.0, 46.0, 44.0)[seed], 0.9, 50)
        for other in range(3):
            if other != seed:
                path = bench.cross_file(other, seed)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"test": {"segment_semantic": {"miou": 51.0 if other > seed else 49.0}}}))
    return bench


def test_a_sane_setting_reads_valid_with_intervals_and_ties(tmp_path):
    bench = _sane_bench(tmp_path)
    analysis = analyse(bench)
    assert analysis.noise_floor == pytest.approx(2.0)
    assert sorted(analysis.cross.values()) == pytest.approx([-2.0] * 3 + [2.0] * 3)
    assert analysis.delta["random target=0.9"] == pytest.approx({0: -20.0, 1: -18.0, 2: -22.0})
    random = analysis.intervals["random target=0.9"]  # mean −20, s = 2: half width 4.303 · 2/√3
    assert random.mean == pytest.approx(-20.0) and random.high == pytest.approx(-20 + 4.303 * 2 / 3 ** 0.5)
    assert analysis.convergence.mean == pytest.approx(1 / 3)  # ΔT +1, −1, +1
    difference, word = analysis.versus["random target=0.9"]  # −10 on every seed against lth
    assert (difference.mean, difference.low, difference.high, word) == (pytest.approx(-10.0),) * 3 + ("loss",)
    assert analysis.valid and analysis.label == "setting valid: every sanity check passes"
    content = write_outputs(bench)
    table = (tmp_path / "bench" / "bench.md").read_text()
    assert table.startswith(f"# Bench `{bench.source}`: setting valid: every sanity check passes")
    assert "| noise floor | 2.00 ΔT (6 pairs) |" in table
    assert "| random | -20.00 [-24.97, -15.03] worse |" in table
    assert "| lth | -10.00 [-14.97, -5.03] worse |" in table
    assert "| random | loss -10.00 [-10.00, -10.00] |" in table
    assert "| dense x2 steps | – |" in table  # the convergence runs in the detailed tables
    assert content["analysis"]["valid"] and content["analysis"]["noise_floor"] == pytest.approx(2.0)
    assert content["rows"][2]["ΔT low"] == pytest.approx(-20 - 4.303 * 2 / 3 ** 0.5)
    # a difference within the noise floor is a tie, though its interval excludes 0
    for seed, miou in enumerate((49.25, 49.0, 49.5)):  # ΔT −1.5, −2, −1
        (tmp_path / "bench" / "lth" / "t0.9" / f"seed{seed}" / "result.json").write_text(json.dumps(
            {"test": {"segment_semantic": {"miou": miou}}, "train_iterations": 100, "dense_iterations": 50,
             "sparsity": {"overall": 0.9, "components": {"backbone": 0.9, "segment_semantic": 0.9}}}))
    lth = analyse(bench).intervals["lth target=0.9"]  # mean −1.5, s = 0.5: half width 4.303 · 0.5/√3 = 1.24
    assert lth.high < 0 and verdict(lth, 2.0) == "tie"
    write_outputs(bench)
    assert "| lth | -1.50 [-2.74, -0.26] tie |" in (tmp_path / "bench" / "bench.md").read_text()


@pytest.mark.parametrize("change, problem", [
    ({"min_head_share": 0.5}, "the heads hold 14.5 % of the weights, under 50 %"),
    ({"dense_x2": (55.0, 56.0, 54.0)}, "the dense reference has not converged: 2× the steps change its ΔT by +10.00"),
    ({"rand": (49.0, 52.0, 50.0)}, "random at 0.9 is not clearly worse than dense"),
    ({"max_noise_floor": 1.5}, "the noise floor 2.00 ΔT exceeds 1.5: the dense models of different seeds disagree"),
])
def test_each_failed_sanity_check_labels_the_table_setting_invalid(tmp_path, change, problem):
    bench = _sane_bench(tmp_path, **change)
    analysis = analyse(bench)
    assert not analysis.valid and analysis.label.startswith(f"setting invalid: {problem}")
    write_outputs(bench)
    table = (tmp_path / "bench" / "bench.md").read_text()
    assert table.startswith(f"# Bench `{bench.source}`: setting invalid: {problem}")
    assert "## ΔT against dense (setting invalid, not a ranking)" in table


def test_partial_bench_says_which_runs_are_missing(tmp_path):
    bench = load_bench(_bench_file(tmp_path, methods=["snip"], targets=[0.5, 0.9]))
    _fake_result(tmp_path, "dense/seed0", 50.0, 0.0)
    _fake_result(tmp_path, "snip/t0.5/seed0", 45.0, 0.5)
    content = write_outputs(bench)
    assert content["missing"] == ["snip target=0.9 seed=0"]
    assert "Missing 1 of 3 runs: snip target=0.9 seed=0" in (tmp_path / "bench" / "bench.md").read_text()


def test_pretrain_trains_one_dense_model_first_and_every_run_starts_from_it(tmp_path):
    from safetensors.torch import load_file

    path = _bench_file(tmp_path, seeds=[0, 1], min_head_share=0.1,
                       pretrain={"steps": 8, "lr_step": 4, "lr": 0.002})
    bench = load_bench(path)
    pretrain = bench.pretrain_run()
    assert pretrain.run_dir == tmp_path / "bench" / "pretrain" and pretrain not in bench.runs()
    config = bench.config(pretrain)
    assert (config.method.name, config.seed, config.train.steps, config.train.lr, config.train.init_from) == \
        ("dense", 0, 8, 0.002, None)
    for run in bench.runs():  # every run, dense included, starts from the pretrained model
        assert bench.config(run).train.init_from == str(pretrain.run_dir)
        assert bench.config(run).train.steps == 12
    lines = []
    run_bench(bench, echo=lines.append)
    assert lines[1] == f"pretrain: training into {pretrain.run_dir}" and lines[2].startswith("pretrain: done in")
    assert lines[3] == f"run 1/4: dense seed=0: training into {bench.runs()[0].run_dir}"
    # the dense run at step 1 saw the pretrained weights: its first loss is the pretrained model's level
    first = lambda run_dir: json.loads((run_dir / "log.jsonl").read_text().splitlines()[0])["total_loss"]
    scratch = tmp_path / "scratch"
    (tmp_path / "plain").mkdir()
    train(load_bench(_bench_file(tmp_path / "plain", seeds=[0, 1])).config(bench.runs()[0]), scratch)
    assert first(bench.runs()[0].run_dir) < first(scratch)
    assert set(load_file(pretrain.run_dir / "model.safetensors")) == set(load_file(scratch / "model.safetensors"))
    again = []
    run_bench(load_bench(path), echo=again.append)
    assert again[1] == f"pretrain: {pretrain.run_dir} finished, skipped"
    content = write_outputs(bench)
    assert [r["method"] for r in content["runs"]] == ["dense", "dense", "random", "random"]  # not in the table
    with pytest.raises(ConfigError, match=r"`bench.pretrain` and `train.init_from` both"):
        load_bench(path, [f"train.init_from={scratch}"])
    assert "Every run, dense included, starts from one dense model pretrained for 8 steps" in \
        (tmp_path / "bench" / "bench.md").read_text()
    # a new pretrained model under finished runs would mix two starting points in one table: refused
    import shutil
    shutil.rmtree(pretrain.run_dir)
    with pytest.raises(ConfigError, match=r"started from a pretrained model that is no longer in .*delete the whole"):
        load_bench(path, ['bench.pretrain={"steps": 6}'])


def test_pretrain_schedule_scales_with_its_steps_unless_given_and_needs_steps(tmp_path):
    path = _bench_file(tmp_path, pretrain={"steps": 120})
    config = load_bench(path).config(load_bench(path).pretrain_run())
    # TINY: 12 steps, lr halved every 6: the pretrain's 120 steps halve it every 60, the same shape
    assert (config.train.steps, config.train.lr_step) == (120, 60)
    given = load_bench(path, ['bench.pretrain={"steps": 120, "lr_step": 100}'])
    assert given.config(given.pretrain_run()).train.lr_step == 100
    for bad in ("{}", '{"lr": 0.01}', '{"steps": 0}', '{"stepz": 5, "steps": 3}'):
        with pytest.raises(ConfigError, match=r"steps|stepz"):
            load_bench(path, [f"bench.pretrain={bad}"])
    raw = yaml.safe_load(path.read_text())
    raw["train"] = None  # an empty `train:` section
    path.write_text(yaml.safe_dump(raw))
    assert load_bench(path).config(load_bench(path).pretrain_run()).train.steps == 120


def test_bench_file_errors_name_the_key(tmp_path, capsys):
    path = _bench_file(tmp_path, methods=["magic"])
    with pytest.raises(ConfigError, match=r"`bench.methods`.*unknown method\(s\) \['magic'\]"):
        load_bench(path)
    with pytest.raises(ConfigError, match="bench.targets"):
        load_bench(_bench_file(tmp_path), ["bench.targets=[1.5]"])
    with pytest.raises(ConfigError, match="unknown key `train.stepz`"):
        load_bench(_bench_file(tmp_path), ["train.stepz=3"])
    with pytest.raises(ConfigError, match=r"`method` option\(s\) \['rounds_'\] belong to no method"):
        load_bench(_bench_file(tmp_path), ["method.rounds_=3"])
    # an option of a method this bench leaves out is unused, not an error
    assert load_bench(_bench_file(tmp_path, methods=["snip"]), ["method.rounds=2"]).section.methods == ["snip"]
    plain = tmp_path / "plain.yaml"
    plain.write_text("train: {steps: 3}\n")
    assert main(["bench", "--config", str(plain)]) == 2
    assert "needs a `bench` section" in capsys.readouterr().err


def test_the_synthetic_preset_is_the_full_comparison():
    bench = load_bench("bench_synthetic")
    assert len(bench.runs()) == 3 + 3 + 12 * 2 * 3  # dense, dense at 2× steps, 12 methods × 2 targets × 3 seeds
    assert bench.section.targets == [0.7, 0.9] and bench.section.seeds == [0, 1, 2]
    assert (bench.section.convergence, bench.section.min_head_share, bench.section.compare_to) == (2, 0.7, "adapmtl")
    # every run starts from one pretrained dense model and continues its schedule, shrunk to the budget
    pretrain = bench.config(bench.pretrain_run()).train
    assert (pretrain.steps, pretrain.lr, pretrain.lr_step, pretrain.init_from) == (12000, 1e-3, 4800, None)
    assert {bench.config(r).train.init_from for r in bench.runs()} == {"runs/bench_synthetic/pretrain"}
    assert (bench.config(bench.runs()[0]).train.lr, bench.config(bench.runs()[0]).train.lr_step) == (1e-3, 400)
    numel = component_numel(bench.config(bench.runs()[0]))
    assert 1 - numel["backbone"] / sum(numel.values()) >= 0.7
    assert {r.method for r in bench.runs()} == {"dense", "adapmtl", "adapmtl_global", "adapmtl_layer",
                                                  "adapmtl_equal_weights", "imp", "lth", "snip", "gmp",
                                                  "disparse_static", "disparse_dynamic", "disparse_pretrained",
                                                  "random"}


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads child processes from /proc (Linux)")
def test_workers_end_when_the_bench_process_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    path = _bench_file(tmp_path, methods=["random"], seeds=[0, 1], jobs=2)
    bench = subprocess.Popen([sys.executable, "-m", "adapmtl", "bench", "--config", str(path), "train.steps=100000",
                              "train.val_every=100000", "train.checkpoint_every=100000", "train.lr_step=100000"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children(parent):
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue  # a process that ended while we read
        return found

    workers = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline:  # the two workers (the resource tracker too)
            time.sleep(0.5)
            workers = [pid for pid in children(bench.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) == 2, "the bench never started its workers"
        os.kill(bench.pid, signal.SIGKILL)  # no chance to shut its pool down
        bench.wait()
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
                  for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()
                 and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]
        assert alive == [], "workers trained on after their bench was killed"
    finally:
        bench.kill()
        for pid in workers + children(bench.pid):  # orphans of a failed check, too
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
