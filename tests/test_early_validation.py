"""Everything that can be checked before a run's first write is checked before it (issue 12 D, 14.1)."""
import pytest
import torch

from adapmtl.cli import main
from adapmtl.engine import ConfigError, load_config, train
from adapmtl.engine.config import validate_config
from tests.engine_helpers import TINY, tiny_config


@pytest.mark.parametrize("overrides, message", [
    (["method.name=snip", "method.rounds=5"], "unknown key `method.rounds`; allowed here: name, target, weighting"),
    (["method.name=adapmtl_global", "method.granularity=layer"], "unknown key `method.granularity`"),
    (["method.name=magic"], "`method.name`: unknown method 'magic'; expected one of adapmtl,"),
    (["model.name=resnet9000"], "`model.name`: unknown model 'resnet9000'"),
    (["data.dataset=cityscapes"], "`data.dataset`: unknown dataset 'cityscapes'"),
    (["method.weighting=uniform"], "`method.weighting`: unknown weighting 'uniform'"),
    (["train.device=gpu"], "`train.device`: 'gpu' is not a device"),
    (["train.steps=[1,"], "override 'train.steps=[1,': the value is not valid YAML"),
])
def test_bad_options_are_config_errors_at_load_time(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config("quickstart", overrides)


def test_each_method_gets_its_own_options_class():
    config = load_config(None, ["method.name=imp", "method.rounds=4"])
    assert type(config.method).__name__ == "IMPOptions"
    assert config.method.rounds == 4
    # The saved config round-trips through the same validation.
    again = validate_config(config.model_dump(mode="json"))
    assert again.method == config.method


@pytest.mark.parametrize("overrides, message", [
    (["data.batch_size=32"], "fewer than one batch"),
    (["method.name=lth", "method.rewind_step=11"], "rewind step"),
    (["data.synthetic_val=0"], "synthetic_val"),
])
def test_errors_found_when_building_the_run_leave_no_folder(tmp_path, overrides, message):
    with pytest.raises(Exception, match=message):
        train(tiny_config(tmp_path, "name=r", *overrides))
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_device_leaves_no_folder(tmp_path, capsys):
    code = main(["train", "--config", "quickstart", f"out_dir={tmp_path}", "name=r", "train.device=cuda", *TINY])
    assert code == 2
    assert "train.device" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("stop_at", [0, -1, 13])
def test_stop_at_outside_the_run_is_refused(tmp_path, stop_at):
    with pytest.raises(ConfigError, match=f"--stop-at {stop_at}: expected a step after the current one"):
        train(tiny_config(tmp_path, "name=r"), stop_at=stop_at)
    assert not (tmp_path / "r").exists()


def test_a_batch_the_processes_cannot_share_is_refused_before_training(tmp_path):
    from adapmtl.data import SyntheticScenes
    from adapmtl.engine.data import train_loader

    config = tiny_config(tmp_path)  # batch 4
    with pytest.raises(ConfigError, match=r"data.batch_size \(4\) must be a multiple of the number of processes \(3\)"):
        train_loader(config, SyntheticScenes(16, (8, 8)), 0, rank=0, world_size=3)


def test_weighting_options_are_checked_against_the_chosen_weighting_at_load_time(tmp_path):
    config = load_config(None, ["method.weighting_options={begin: 3, window: 2}"])
    assert config.method.weighting_options == {"begin": 3, "window": 2}
    # dense weights its tasks equally by default: adaptive's options are foreign to it
    with pytest.raises(ConfigError, match=r"`method.weighting_options`: the 'equal' weighting takes no option "
                                          r"\['begin'\]; its options: none"):
        load_config(None, ["method.name=dense", "method.weighting_options={begin: 3}"])
    with pytest.raises(ConfigError, match=r"takes no option \['stride'\]; its options: begin, window"):
        load_config(None, ["method.weighting_options={stride: 3}"])


def test_a_saved_config_of_an_older_version_still_loads(tmp_path):
    from adapmtl.engine import RunDir

    folder = tmp_path / "old"
    folder.mkdir()
    # as older adapmtl saved it: every method's options, adaptive's two as flat keys
    (folder / "config.yaml").write_text(
        "method:\n  name: adapmtl\n  target: 0.8\n  rounds: 3\n  update_every: 50\n"
        "  weighting_begin: 7\n  weighting_window: null\n")
    config = RunDir(folder).config()
    assert config.method.target == 0.8 and config.method.weighting_options == {"begin": 7}
