"""The user's own architectures end to end, through the command line: train (a factory named in
the config, components and pruned parameters in the config), finalize, eval, export (dense,
sparse, ONNX), reload, compile, report and sensitivity; and the finished run's dense state dict
loads into the user's unmodified model class."""
from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

from adapmtl.cli import main
from adapmtl.engine import RunDir
from adapmtl.export import load_dense, load_sparse, onnx_session
from adapmtl.inference import compile_sparse
from tests import user_models

DATA = ["data.synthetic_size=[24,32]", "data.crop=[24,32]", "data.scale=[0.8,1.2]", "data.synthetic_train=16",
        "data.synthetic_val=8", "data.synthetic_test=8", "data.batch_size=4", "data.eval_batch_size=8",
        "train.steps=12", "train.log_every=2", "train.val_every=4", "train.checkpoint_every=4", "train.lr_step=6",
        "train.progress=false", "method.target=0.8"]
TASKS = {"segment_semantic": 8, "normal": 3, "depth_zbuffer": 1}  # the synthetic scenes' tasks

MODELS = {
    "resnet_heads": ["model.components={backbone: encoder, segment_semantic: decoders.segment_semantic, "
                     "normal: decoders.normal, depth_zbuffer: 'decoders.depth*'}"],
    "unet": ["model.components={backbone: ['down*', up, fuse, aux], segment_semantic: 'outputs.segment*', "
             "normal: outputs.normal, depth_zbuffer: outputs.depth_zbuffer}"],
    "tiny_vit": ["model.options.tokens=12", "model.parameters=['heads.*.proj_w']",
                 "model.components={backbone: [embed, encoder], segment_semantic: heads.0, normal: heads.1, "
                 "depth_zbuffer: heads.2}"],
}


def _args(tmp_path, run, factory: str, *extra: str) -> list[str]:
    config = tmp_path / "user.yaml"  # a user's config names their factory; the rest here is tiny data and steps
    config.write_text(f"model:\n  name: tests.user_models:{factory}\n")
    return ["train", "--config", str(config), "--run-dir", str(run), *DATA, *MODELS[factory], *extra]


def _train(tmp_path, factory: str, *extra: str):
    run = tmp_path / factory
    assert main(_args(tmp_path, run, factory, *extra)) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_models")
    return {factory: _train(root, factory) for factory in MODELS}


def _outputs(model, image):
    with torch.no_grad():
        out = model(image)
    return list(out.values()) if isinstance(out, dict) else list(out)


@pytest.mark.parametrize("factory", list(MODELS))
def test_a_factory_model_trains_to_the_target_with_its_configured_components(runs, factory):
    result = json.loads((runs[factory] / "result.json").read_text())
    assert abs(result["sparsity"]["overall"] - 0.8) <= 0.0005
    assert list(result["sparsity"]["components"]) == ["backbone", *TASKS]
    spec = RunDir(runs[factory]).model_spec()
    assert spec.name == f"tests.user_models:{factory}" and spec.tasks == TASKS
    assert spec.scope.components["backbone"]  # the run records what it pruned, so later verbs agree


def test_a_bare_parameter_named_in_the_config_is_pruned_and_counted(runs):
    model, spec = RunDir(runs["tiny_vit"]).load_model()
    from adapmtl import sparsity_report
    report = sparsity_report(model, **spec.scope.arguments())
    for i in range(3):
        name = f"heads.{i}.proj_w"
        assert name in report.layers and name not in report.dense_params
        assert report.layers[name].zeros == int((model.heads[i].proj_w == 0).sum()) > 0
    assert "encoder.layers.0.self_attn.in_proj_weight" in report.layers
    assert "pos_embed" in report.dense_params  # not named: left dense, and said so


@pytest.mark.parametrize("factory", list(MODELS))
def test_exports_reload_and_onnx_and_compile_give_the_same_outputs(runs, factory, tmp_path):
    run = runs[factory]
    model, _ = RunDir(run).load_model()
    image = torch.randn(2, 3, 24, 32, generator=torch.Generator().manual_seed(1))
    expected = _outputs(model, image)
    for fmt, loader in (("dense", load_dense), ("sparse", load_sparse)):
        out = tmp_path / f"{fmt}.safetensors"
        assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
        for got, want in zip(_outputs(loader(out), image), expected, strict=True):
            assert torch.equal(got, want)
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(onnx_file)]) == 0
    session = onnx_session(onnx_file)
    names = [o.name for o in session.get_outputs()]
    assert names == (list(TASKS) + ["aux"] if factory == "unet" else list(TASKS))  # dict keys, or the tasks
    for got, want in zip(session.run(None, {"image": image.numpy()}), expected, strict=True):
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-4)
    compiled = compile_sparse(model, image[:1])
    for got, want in zip(_outputs(compiled, image[:1]), _outputs(model, image[:1]), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("factory", list(MODELS))
def test_the_finished_model_loads_into_the_unmodified_user_class(runs, factory):
    state = safetensors.torch.load_file(RunDir(runs[factory]).model_file)
    options = {"tokens": 12} if factory == "tiny_vit" else {}
    plain = getattr(user_models, factory)(TASKS, **options)
    plain.load_state_dict(state, strict=True)
    model, _ = RunDir(runs[factory]).load_model()
    image = torch.randn(1, 3, 24, 32)
    for got, want in zip(_outputs(plain.eval(), image), _outputs(model, image), strict=True):
        assert torch.equal(got, want)


def test_eval_report_and_sensitivity_work_on_a_factory_run(runs, capsys):
    run = runs["resnet_heads"]
    result = json.loads((run / "result.json").read_text())
    assert main(["eval", str(run), "--split", "test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    for task, metrics in result["test"].items():
        assert printed["metrics"][task] == pytest.approx(metrics, rel=1e-6)
    assert abs(printed["sparsity"] - 0.8) <= 0.0005
    assert main(["report", str(run)]) == 0
    assert (run / "report" / "report.html").is_file()
    assert main(["sensitivity", str(run), "--component", "normal", "--fractions", "0", "0.5"]) == 0
    sweep = json.loads((run / "sensitivity" / "normal.json").read_text())
    for task, metrics in result["val"].items():  # fraction 0 is the run's own model
        assert sweep["metrics"][0][task] == pytest.approx(metrics, rel=1e-6)


@pytest.mark.parametrize("method", ["snip", "gmp"])
def test_mask_baselines_prune_the_same_configured_weights(tmp_path, method):
    run = _train(tmp_path, "tiny_vit", f"method.name={method}")
    result = json.loads((run / "result.json").read_text())
    assert abs(result["sparsity"]["overall"] - 0.8) <= 0.0005
    assert list(result["sparsity"]["components"]) == ["backbone", *TASKS]
    model, _ = RunDir(run).load_model()
    assert all(int((head.proj_w == 0).sum()) > 0 for head in model.heads)  # the named bare weights were masked


@pytest.mark.parametrize("override, message", [
    ("model.name=tests.user_models:nothing", "has no attribute 'nothing'"),
    ("model.name=tests.no_such_module:build", "cannot import 'tests.no_such_module'"),
    ("model.name=tests.user_models.resnet_heads", "e.g. tests.user_models:resnet_heads"),
    ("model.options.nonsense=1", "raised TypeError"),
    ("model.components={backbone: encoder}", "belong to no component"),
    ("model.parameters=['nothing.*']", "match no parameter"),
])
def test_a_wrong_factory_setting_is_one_line_naming_it_and_leaves_no_folder(tmp_path, capsys, override, message):
    run = tmp_path / "run"
    assert main(_args(tmp_path, run, "resnet_heads", override)) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()


def test_a_model_returning_too_few_outputs_is_named():
    from adapmtl.models.errors import ModelError
    from adapmtl.models.outputs import task_outputs

    with pytest.raises(ModelError, match="returned 2 outputs for 3 tasks"):
        task_outputs((torch.zeros(1), torch.zeros(1)), list(TASKS))
    with pytest.raises(ModelError, match=r"no output for task\(s\) \['normal'\]"):
        task_outputs({"segment_semantic": 1, "depth_zbuffer": 2}, list(TASKS))
    assert list(task_outputs((torch.zeros(1),) * 3, list(TASKS))) == list(TASKS)


def test_disparse_with_a_head_component_not_named_after_a_task_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    components = ("model.components={backbone: encoder, seg: decoders.segment_semantic, normal: decoders.normal, "
                  "depth_zbuffer: decoders.depth_zbuffer}")
    args = _args(tmp_path, run, "resnet_heads", "method.name=disparse_static")
    args[args.index(MODELS["resnet_heads"][0])] = components
    assert main(args) == 2
    assert "component(s) ['seg'] are neither 'backbone' nor a task" in capsys.readouterr().err


def test_outputs_that_do_not_fit_the_tasks_fail_before_the_run_folder_is_written(tmp_path, capsys):
    run, config = tmp_path / "run", tmp_path / "two.yaml"
    config.write_text("model:\n  name: tests.user_models:two_outputs\n")  # two outputs for three tasks
    assert main(["train", "--config", str(config), "--run-dir", str(run), *DATA]) == 2
    assert "the model returned 2 outputs for 3 tasks" in capsys.readouterr().err
    assert not run.exists()


def test_the_bench_runs_a_factory_model_with_its_components(tmp_path):
    import yaml

    from adapmtl.experiments import load_bench, run_bench

    raw = {"bench": {"methods": ["random"], "targets": [0.8], "seeds": [0], "out_dir": str(tmp_path / "bench"),
                     "convergence": None, "min_head_share": None},
           "model": {"name": "tests.user_models:resnet_heads"}}
    for override in [*DATA, MODELS["resnet_heads"][0]]:
        key, value = override.split("=", 1)
        section, name = key.split(".", 1)
        raw.setdefault(section, {})[name] = yaml.safe_load(value)
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    lines = []
    content = run_bench(load_bench(path), echo=lines.append)
    assert content["missing"] == [] and lines[0].startswith("heads hold")
    assert set(content["analysis"]["numel"]) == {"backbone", *TASKS}  # the configured components, counted
