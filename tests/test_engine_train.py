"""Short real runs on synthetic scenes: exact target, run folder, resume, failures, eval."""
import json

import pytest
import torch
from safetensors.torch import load_file

import adapmtl
from adapmtl.engine import NonFiniteLossError, load_config, resume, train
from adapmtl.engine.checkpoint import load_checkpoint
from adapmtl.engine.logger import read_log
from adapmtl.engine.run_eval import evaluate_run
from tests.engine_helpers import tiny_config


def test_adapmtl_run_reaches_the_target_exactly_and_fills_the_run_folder(tmp_path):
    result = train(tiny_config(tmp_path, "name=a"))
    run = tmp_path / "a"
    assert abs(result["sparsity"]["overall"] - 0.8) <= 0.0005
    assert set(result["sparsity"]["components"]) == {"backbone", "segment_semantic", "normal", "depth_zbuffer"}
    assert set(result["test"]) == {"segment_semantic", "normal", "depth_zbuffer"}
    assert 0 <= result["test"]["segment_semantic"]["pixel_acc"] <= 100
    assert result["selected_step"] >= 8  # only validations at the target sparsity (reach step 8) select
    assert sum(result["task_weights"].values()) == pytest.approx(3.0)
    assert set(result["thresholds"]) == set(result["sparsity"]["components"])
    for name in ("config.yaml", "log.jsonl", "result.json", "model.safetensors", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tensorboard").iterdir())
    log = read_log(run)
    train_records = [r for r in log if "loss" in r]
    assert [r["step"] for r in train_records] == [1, 2, 4, 6, 8, 10, 12]
    assert {"task_weights", "lr", "sparsity", "thresholds", "total_loss"} <= set(train_records[0])
    assert [r["step"] for r in log if "val" in r] == [4, 8, 12]
    # the saved model is an ordinary dense-format state dict at the exact sparsity
    model = adapmtl.models.create_model("deeplab_resnet34", {"segment_semantic": 8, "normal": 3, "depth_zbuffer": 1},
                                        width=0.125, head_channels=8)
    model.load_state_dict(load_file(str(run / "model.safetensors")))
    assert adapmtl.sparsity_report(model).overall == pytest.approx(result["sparsity"]["overall"])
    assert json.loads((run / "result.json").read_text())["test"] == result["test"]


def test_eval_of_a_finished_run_reproduces_its_test_metrics(tmp_path):
    result = train(tiny_config(tmp_path, "name=e"))
    again = evaluate_run(tmp_path / "e", "test", "final")
    for task, metrics in result["test"].items():
        assert again["metrics"][task] == pytest.approx(metrics)
    assert again["sparsity"] == pytest.approx(result["sparsity"]["overall"])
    best = evaluate_run(tmp_path / "e", "val", "best")
    assert best["sparsity"] == pytest.approx(0.8, abs=0.01)


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path):
    straight = train(tiny_config(tmp_path, "name=straight"))
    assert train(tiny_config(tmp_path, "name=split"), stop_at=5) is None
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["step"] == 5
    resumed = resume(tmp_path / "split")
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"] == straight["test"] and resumed["task_weights"] == straight["task_weights"]
    steps = [r["step"] for r in read_log(tmp_path / "split") if "loss" in r]
    assert steps == [1, 2, 4, 6, 8, 10, 12]  # no duplicated records around the interruption


def test_dense_baseline_and_equal_weighting(tmp_path):
    result = train(tiny_config(tmp_path, "name=d", "method.name=dense"))
    assert result["sparsity"]["overall"] == 0.0 and result["task_weights"] == {
        "segment_semantic": 1.0, "normal": 1.0, "depth_zbuffer": 1.0}


def test_a_non_finite_loss_stops_with_step_and_task(tmp_path, monkeypatch):
    from adapmtl.tasks.depth import DepthTask

    calls = {"n": 0}
    original = DepthTask.loss

    def exploding(self, pred, target):
        calls["n"] += 1
        return original(self, pred, target) * (float("nan") if calls["n"] == 3 else 1.0)

    monkeypatch.setattr(DepthTask, "loss", exploding)
    with pytest.raises(NonFiniteLossError, match=r"step 3: the loss of task\(s\) depth_zbuffer is not finite"):
        train(tiny_config(tmp_path, "name=nan", "train.checkpoint_every=1", "train.val_every=100"))
    assert load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")["step"] == 2  # the last good one


def test_a_run_folder_is_never_overwritten(tmp_path):
    train(tiny_config(tmp_path, "name=once", "train.steps=2"))
    with pytest.raises(adapmtl.engine.ConfigError, match="already holds a run; resume it"):
        train(tiny_config(tmp_path, "name=once", "train.steps=2"))


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: many\nmethod:\n  target: 1.2\n  granularty: layer\n")
    with pytest.raises(adapmtl.engine.ConfigError) as error:
        load_config(bad)
    message = str(error.value)
    assert "`train.steps`: Input should be a valid integer" in message
    assert "`method.target`: Input should be less than 1" in message
    assert ("unknown key `method.granularty`; allowed here: name, target, weighting, weighting_options, "
            "min_density, init, policy, reach_at, schedule, interval, granularity") in message
    with pytest.raises(adapmtl.engine.ConfigError, match="must be a multiple of train.accumulate"):
        load_config(None, ["data.batch_size=6", "train.accumulate=4"])


def test_start_from_a_dense_run(tmp_path):
    train(tiny_config(tmp_path, "name=dense", "method.name=dense"))
    result = train(tiny_config(tmp_path, "name=from_dense", f"train.init_from={tmp_path / 'dense'}", "train.steps=4"))
    assert abs(result["sparsity"]["overall"] - 0.8) <= 0.0005
    with pytest.raises(adapmtl.engine.ConfigError, match="init_from.*does not exist"):
        train(tiny_config(tmp_path, "name=bad", f"train.init_from={tmp_path / 'nowhere'}"))
    sparsified = tmp_path / "from_dense" / "checkpoints" / "last.pt"
    with pytest.raises(adapmtl.engine.ConfigError, match="init_from.*does not fit this run's model"):
        train(tiny_config(tmp_path, "name=bad2", f"train.init_from={sparsified}"))


def test_a_micro_batch_without_valid_pixels_does_not_dilute_the_step_loss(tmp_path):
    from adapmtl.engine.data import train_loader
    from adapmtl.engine.distributed import setup
    from adapmtl.engine.trainer import build_run, train_step

    config = tiny_config(tmp_path, "train.accumulate=2", "method.name=dense")
    run = build_run(config, tmp_path / "r", setup("cpu"))
    depth = run.tasks["depth_zbuffer"]
    values = iter([0.0, 3.0])  # micro-batch 1 has no valid depth (loss 0 by the tasks' contract), micro-batch 2 has

    def loss(prediction, target):
        return prediction.sum() * 0 + next(values)

    depth.loss = loss
    batch = next(iter(train_loader(config, run.datasets["train"], 0)))
    losses = train_step(run, batch)
    assert losses["depth_zbuffer"] == 3.0  # the mean over informative micro-batches, not (0 + 3) / 2
