"""Validation that used to run late: empty splits, implausible or non-finite targets, errors inside loader workers."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from adapmtl.data import DatasetError, NYUv2, SyntheticScenes, Taskonomy, check_dataset, write_synthetic
from adapmtl.engine import load_config
from adapmtl.engine.data import build_dataset, eval_loader, train_loader

from tests.data_helpers import SIZE, nyu_root, taskonomy_root  # noqa: F401  (fixtures)


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def edit_json(root, **changes):
    path = root / "nyu_v2_3task.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def write_mtan(root, n_train=3, n_test=1):
    """An MTAN-format folder of constant, valid arrays: image 0.5, label 1, normal +z, depth 2 m."""
    for folder, n in (("train", n_train), ("val", n_test)):
        for name in ("image", "label", "depth", "normal"):
            (root / folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(root / folder / "image" / f"{i}.npy", np.full((*SIZE, 3), 0.5, np.float32))
            np.save(root / folder / "label" / f"{i}.npy", np.ones(SIZE, np.float32))
            np.save(root / folder / "depth" / f"{i}.npy", np.full((*SIZE, 1), 2.0, np.float32))
            np.save(root / folder / "normal" / f"{i}.npy", np.broadcast_to([0.0, 0.0, 1.0], (*SIZE, 3)).astype(np.float32))
    return root


def problems_about(report, text):
    return [p for p in report.problems if text in p]


# ---------- empty splits fail when the dataset is built, and `data check` reports them ----------

def test_an_empty_json_split_is_an_error_naming_the_file_and_key(nyu_root, tmp_path):
    root = copy(nyu_root, tmp_path / "d")
    edit_json(root, test=[])
    with pytest.raises(DatasetError, match=r"nyu_v2_3task.json: split 'test' has no samples \(nothing listed under 'test'\)"):
        NYUv2(root, "test")
    assert len(NYUv2(root, "train")) == 5  # the other splits still build
    report = check_dataset(root)
    assert not report.ok and problems_about(report, "split test:") and "test" not in report.splits
    edit_json(root, val=[])
    with pytest.raises(DatasetError, match=r"split 'val' has no samples \(nothing listed under 'val'\)"):
        NYUv2(root, "val")
    original = json.loads((nyu_root / "nyu_v2_3task.json").read_text())
    (root / "nyu_v2_3task.json").write_text(json.dumps({"train": original["train"][:1], "test": original["test"]}))
    with pytest.raises(DatasetError, match=r"nyu_v2_3task.json key 'train': cannot carve a val split from a train list of 1"):
        NYUv2(root, "val")


def test_an_empty_mtan_folder_is_an_error_naming_the_folder(tmp_path):
    root = write_mtan(tmp_path / "m", n_test=0)
    with pytest.raises(DatasetError, match=r"val/image: split 'test' has no samples"):
        NYUv2(root, "test")
    report = check_dataset(root)
    assert [p for p in report.problems if p.startswith("split test:")] and set(report.splits) == {"train", "val"}
    for name in ("image", "label", "depth", "normal"):
        shutil.rmtree(root / "train" / name)
        (root / "train" / name).mkdir()
    with pytest.raises(DatasetError, match=r"train/image: split 'train' has no samples"):
        NYUv2(root, "train")


def test_an_empty_taskonomy_split_is_an_error_naming_the_buildings(taskonomy_root, tmp_path):
    root = copy(taskonomy_root, tmp_path / "d")
    for png in (root / "synth002" / "rgb").glob("*.png"):
        png.unlink()
    with pytest.raises(DatasetError, match=r"split 'test' \(buildings \['synth002'\]\) has no samples: they hold no rgb/"):
        Taskonomy(root, "test")
    assert problems_about(check_dataset(root), "split test:")
    for png in (root / "synth001" / "depth_zbuffer").glob("*.png"):
        png.unlink()
    with pytest.raises(DatasetError, match=r"split 'val' .* no samples: all 2 samples lack a file .* missing='skip' dropped"):
        Taskonomy(root, "val", missing="skip")


def test_the_engine_fails_when_building_an_empty_split(nyu_root, tmp_path):
    root = copy(nyu_root, tmp_path / "d")
    edit_json(root, test=[])
    config = load_config(None, ["data.dataset=nyuv2", f"data.root={root}", f"out_dir={tmp_path / 'runs'}"])
    with pytest.raises(DatasetError, match="split 'test' has no samples"):
        build_dataset(config, "test")
    with pytest.raises(DatasetError, match="n must be at least 1"):
        SyntheticScenes(0)


# ---------- every value range a loss relies on is checked when the file is read ----------

def test_depth_up_to_the_bound_loads_and_beyond_it_is_an_error(nyu_root, tmp_path):
    root = copy(nyu_root, tmp_path / "d")
    depth = np.full(SIZE, 1000.0, np.float32)
    depth[0, 0] = 0.0
    np.save(root / "depth/0006.npy", depth)
    assert np.array_equal(NYUv2(root, "test")[0]["depth_zbuffer"][0].numpy(), depth)
    depth[3, 4] = 3e38  # the value: the L1 loss of such a batch overflows float32
    np.save(root / "depth/0006.npy", depth)
    with pytest.raises(DatasetError, match=r"depth/0006.npy: depth values up to 3e\+38 m; expected at most 1000 m"):
        NYUv2(root, "test")[0]
    assert problems_about(check_dataset(root), "depth/0006.npy: depth values up to 3e+38 m")


@pytest.mark.parametrize(
    "folder, array, message",
    [
        ("depth", np.full((*SIZE, 1), 4500.0), r"depth/0.npy: depth values up to 4\.5e\+03 m"),  # millimetres
        ("depth", np.full((*SIZE, 1), -np.inf), r"depth/0.npy: holds NaN or infinite"),
        ("depth", np.full((*SIZE, 1), 1e300), r"depth/0.npy: values up to 1e\+300 exceed the float32 range"),
        ("normal", np.full((*SIZE, 3), np.nan), r"normal/0.npy: holds NaN or infinite"),
        ("label", np.full(SIZE, np.nan), r"label/0.npy: holds NaN or infinite"),
        ("label", np.full(SIZE, 13.0), r"label/0.npy: out-of-range labels \[13\.0\]; expected 0..12"),
        ("image", np.full((*SIZE, 3), np.inf), r"image/0.npy: holds NaN or infinite"),
    ],
)
def test_a_target_outside_its_loss_range_names_the_file(tmp_path, folder, array, message):
    root = write_mtan(tmp_path / "m")
    np.save(root / "val" / folder / "0.npy", array)
    with pytest.raises(DatasetError, match=message):
        NYUv2(root, "test")[0]
    report = check_dataset(root)
    assert len(report.problems) == 1 and problems_about(report, f"val/{folder}/0.npy")


def test_a_split_without_any_valid_depth_pixel_is_reported_when_read_whole(nyu_root, tmp_path):
    root = copy(nyu_root, tmp_path / "d")
    for name in ("0006", "0007"):
        np.save(root / f"depth/{name}.npy", np.zeros(SIZE, np.float32))
    report = check_dataset(root)
    assert report.problems == [
        "split test: no valid depth_zbuffer pixel in any of its 2 readable samples; "
        "its depth_zbuffer loss is always 0 and its metrics cannot be computed"
    ]
    assert check_dataset(root, limit=1).ok  # the unread sample might hold valid depth


# ---------- errors inside DataLoader workers reach the main process as themselves ----------

def loader_config(root, tmp_path, workers):
    return load_config(None, [
        "data.dataset=nyuv2", f"data.root={root}", "data.crop=null", "data.batch_size=2", "data.eval_batch_size=1",
        f"data.workers={workers}", "train.steps=2", f"out_dir={tmp_path / 'runs'}",
    ])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_dataset_error_in_a_worker_arrives_as_itself_in_one_line(nyu_root, tmp_path, workers):
    root = copy(nyu_root, tmp_path / "d")
    np.save(root / "depth/0007.npy", np.full(SIZE, np.nan, np.float32))
    dataset = NYUv2(root, "test")
    with pytest.raises(DatasetError) as direct:
        dataset.load(1)
    with pytest.raises(DatasetError) as through_loader:
        list(eval_loader(loader_config(root, tmp_path, workers), dataset))
    assert type(through_loader.value) is DatasetError
    assert str(through_loader.value) == str(direct.value) and "\n" not in str(through_loader.value)


def test_a_bad_training_sample_in_a_worker_arrives_as_itself(nyu_root, tmp_path):
    root = copy(nyu_root, tmp_path / "d")
    train = NYUv2(root, "train")
    Image.fromarray(np.full(SIZE, 77, np.uint8)).save(train.files[0][1])  # label 77: out of 0..39
    with pytest.raises(DatasetError, match=r"seg/\d+.png: out-of-range labels \[77\]; expected 0..39 or 255") as caught:
        list(train_loader(loader_config(root, tmp_path, 1), train, start=0))
    assert "Traceback" not in str(caught.value) and "worker" not in str(caught.value)


def test_good_batches_are_unchanged_by_the_fault_carrier(nyu_root, tmp_path):
    train = NYUv2(nyu_root, "train")
    config = loader_config(nyu_root, tmp_path, 1)
    batches = list(train_loader(config, train, start=0))
    plain = list(torch.utils.data.DataLoader(train, batch_sampler=train_loader(config, train, start=0).batch_sampler))
    assert len(batches) == 2 == len(plain)
    for ours, theirs in zip(batches, plain):
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
