"""The run config's `convention` reaches every place that computes numbers the original code computes
differently (docs/conventions.md): the tasks (normals, mIoU, loss resolution) and the data."""
import json

from adapmtl.cli import main
from adapmtl.engine import load_config
from adapmtl.engine.data import build_dataset, build_tasks
from tests.engine_helpers import TINY


def _tasks(*overrides):
    config = load_config(None, [*TINY, *overrides])
    return build_tasks(config, build_dataset(config, "train"))


def test_the_convention_and_miou_over_reach_the_tasks():
    paper = _tasks("convention=paper")
    assert {t.convention for t in paper.values()} == {"paper"}
    assert paper["segment_semantic"].miou_over == "with_tp"  # the original's mIoU
    corrected = _tasks()
    assert {t.convention for t in corrected.values()} == {"corrected"}
    assert corrected["segment_semantic"].miou_over == "present"
    assert _tasks("convention=paper", "data.miou_over=all")["segment_semantic"].miou_over == "all"


def test_a_paper_convention_run_trains_at_the_heads_resolution_and_differs_from_corrected(tmp_path):
    results = {}
    for convention in ("paper", "corrected"):
        run = tmp_path / convention
        assert main(["train", "--config", "quickstart", "--run-dir", str(run), *TINY, f"convention={convention}",
                     "model.upsample=false"]) == 0
        results[convention] = json.loads((run / "result.json").read_text())
    for result in results.values():
        assert abs(result["sparsity"]["overall"] - 0.8) <= 0.0005
    paper, corrected = results["paper"]["test"], results["corrected"]["test"]
    assert paper["normal"]["angle_mean"] < corrected["normal"]["angle_mean"]  # raw colour vectors: smaller angles
    assert paper["depth_zbuffer"] != corrected["depth_zbuffer"]


def test_a_freeze_run_records_that_it_was_not_trimmed(tmp_path):
    run = tmp_path / "freeze"
    assert main(["train", "--config", "quickstart", "--run-dir", str(run), *TINY, "method.policy=freeze"]) == 0
    result = json.loads((run / "result.json").read_text())
    record = result["finalize"]
    assert record["trimmed"] is False and record["aimed_at"] == 0.8 and record["shift"] == 0.0
    assert record["pruned"] == record["revived"] == 0 and record["after"] == result["sparsity"]["overall"]
    far = abs(record["after"] - 0.8) > 0.01
    assert far == any("policy 'freeze' does not trim" in w for w in result["warnings"])
    assert result["convention"] == "corrected"


def test_a_large_final_trim_is_a_warning_in_the_result(tmp_path, monkeypatch):
    import adapmtl.engine.trainer as trainer

    def warnings_of(name):
        run = tmp_path / name
        assert main(["train", "--config", "quickstart", "--run-dir", str(run), *TINY]) == 0
        result = json.loads((run / "result.json").read_text())
        moved = abs(result["finalize"]["before"] - result["finalize"]["after"])
        return moved, [w for w in result["warnings"] if "finalize moved the overall sparsity" in w]

    moved, warned = warnings_of("normal")
    assert moved <= trainer.LARGE_TRIM and warned == []  # the controller held the target: nothing to say
    monkeypatch.setattr(trainer, "LARGE_TRIM", -1.0)  # the same trim (however small), judged large
    _, warned = warnings_of("large")
    assert len(warned) == 1 and "without retraining" in warned[0] and "method.reach_at" in warned[0]


def test_the_paper_presets_use_the_original_recipe():
    for name in ("nyuv2_resnet34", "nyuv2_mobilenetv2", "taskonomy_resnet34"):
        config = load_config(name)
        assert config.convention == "paper" and config.data.normalize == "bgr_mean", name
        assert config.model.upsample is False and config.train.amp == "off", name  # heads' resolution, fp32
        assert config.data.scale == (0.5, 1.5), name
    assert load_config("nyuv2_resnet34").data.eval_size == (321, 321)  # the original resizes test images
    assert load_config("taskonomy_resnet34").data.eval_size == (224, 224)


def test_the_paper_convention_flips_nyu_normals_as_an_image_but_negates_taskonomy_x_as_the_original(monkeypatch):
    from adapmtl.data import DATASETS
    from adapmtl.engine import data as engine_data

    def negates(dataset):
        built = {}

        class Capture:  # the dataset stand-in: keeps the transform the engine builds for it
            metric_set = DATASETS[dataset].metric_set

            @staticmethod
            def from_config(data, split, transform, seed):
                built["transform"] = transform

        monkeypatch.setattr(engine_data, "dataset_class", lambda name: Capture)
        engine_data.build_dataset(load_config(None, [*TINY, "convention=paper", f"data.dataset={dataset}"]), "train")
        return built["transform"].negate_normal_x

    assert negates("nyuv2") is False and negates("synthetic") is False
    assert negates("taskonomy") is True
