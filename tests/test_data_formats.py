"""Loaders on files written in the published formats: round trips, splits, and every bad-input case."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from adapmtl.data import DatasetError, NYUv2, Taskonomy, check_dataset, render_scene, write_synthetic
from adapmtl.data.base import normalize_image

from tests.data_helpers import SIZE, nyu_root, taskonomy_root  # noqa: F401  (fixtures)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


# ---------- NYU-v2, AdaShare format ----------

def test_nyu_adashare_round_trip_is_exact_up_to_normal_quantisation(nyu_root):
    test = NYUv2(nyu_root, "test", normalize="unit")
    assert test.format == "adashare" and len(test) == 2 and test.num_classes == 40
    assert test.task_channels == {"segment_semantic": 40, "normal": 3, "depth_zbuffer": 1}
    for i, index in enumerate((6, 7)):  # the last scenes are the test split
        sample, scene = test[i], render_scene([5, index], SIZE)
        assert torch.equal(sample["image"], normalize_image(scene["image"], "unit"))
        assert np.array_equal(sample["segment_semantic"].numpy(), scene["segment_semantic"])
        assert np.array_equal(sample["depth_zbuffer"][0].numpy(), scene["depth_zbuffer"])
        normal = sample["normal"].numpy().transpose(1, 2, 0)
        assert np.abs(normal - scene["normal"]).max() < 0.01
        assert np.allclose(np.linalg.norm(normal, axis=2), 1.0, atol=1e-5)


def test_nyu_image_normalisations(nyu_root):
    rgb = render_scene([5, 6], SIZE)["image"].astype(np.float32)
    bgr = NYUv2(nyu_root, "test", normalize="bgr_mean")[0]["image"]
    assert torch.allclose(bgr[0], torch.from_numpy(rgb[..., 2] - 104.00698793))
    imagenet = NYUv2(nyu_root, "test")[0]["image"]
    assert torch.allclose(imagenet[1], torch.from_numpy((rgb[..., 1] / 255 - 0.456) / 0.224), atol=1e-5)


def test_nyu_val_is_carved_from_train_seeded_and_disjoint(nyu_root):
    train, val, test = (NYUv2(nyu_root, s) for s in ("train", "val", "test"))
    assert len(train) + len(val) == 6 and len(val) == 1
    assert not set(train.files) & set(val.files) and not set(val.files) & set(test.files)
    assert NYUv2(nyu_root, "val").files == val.files
    other = [NYUv2(nyu_root, "val", split_seed=s).files for s in range(6)]
    assert len({tuple(f) for f in other}) > 1
    assert len(NYUv2(nyu_root, "val", val_fraction=0.5)) == 3


def test_nyu_json_val_is_used_when_present(nyu_root, tmp_path):
    root = _copy(nyu_root, tmp_path / "d")
    info = json.loads((root / "nyu_v2_3task.json").read_text())
    info["val"] = info["train"][:2]
    info["train"] = info["train"][2:]
    (root / "nyu_v2_3task.json").write_text(json.dumps(info))
    assert len(NYUv2(root, "train")) == 4 and len(NYUv2(root, "val")) == 2 and len(NYUv2(root, "trainval")) == 6


def test_nyu_ignore_and_invalid_encodings(nyu_root, tmp_path):
    root = _copy(nyu_root, tmp_path / "d")
    seg = np.array(Image.open(root / "seg/0006.png"))
    seg[0, :5] = 255
    Image.fromarray(seg).save(root / "seg/0006.png")
    normal = np.array(Image.open(root / "normal_mask/0006.png"))
    normal[1, :4] = 255
    Image.fromarray(normal).save(root / "normal_mask/0006.png")
    sample = NYUv2(root, "test")[0]
    assert (sample["segment_semantic"][0, :5] == 255).all()
    assert (sample["normal"][:, 1, :4] == 0).all() and (sample["normal"][:, 1, 4:].norm(dim=0) > 0.99).all()


# ---------- NYU-v2, MTAN format ----------

def _write_mtan(root, counts=(5, 2)):
    for folder, count in zip(("train", "val"), counts):
        for i in range(count):
            scene = render_scene([9, i + 10 * (folder == "val")], SIZE)
            label = scene["segment_semantic"].astype(np.float32)
            label[0, 0] = -1
            depth = scene["depth_zbuffer"][..., None].copy()
            depth[1, 1] = 0
            normal = scene["normal"].copy()
            normal[2, 2] = 0
            for name, array in (("image", scene["image"] / 255.0), ("label", label), ("depth", depth), ("normal", normal)):
                (root / folder / name).mkdir(parents=True, exist_ok=True)
                np.save(root / folder / name / f"{i}.npy", array.astype(np.float32))
    return root


def test_nyu_mtan_format(tmp_path):
    root = _write_mtan(tmp_path)
    test = NYUv2(root, "test")
    assert test.format == "mtan" and test.num_classes == 13 and len(test) == 2
    assert len(NYUv2(root, "train")) == 4 and len(NYUv2(root, "val")) == 1
    sample, scene = test[0], render_scene([9, 10], SIZE)
    assert sample["segment_semantic"][0, 0] == 255 and sample["segment_semantic"][5, 5] == scene["segment_semantic"][5, 5]
    assert sample["depth_zbuffer"].shape == (1, *SIZE) and sample["depth_zbuffer"][0, 1, 1] == 0
    assert (sample["normal"][:, 2, 2] == 0).all()


# ---------- Taskonomy ----------

def test_taskonomy_round_trip_all_five_tasks(taskonomy_root):
    test = Taskonomy(taskonomy_root, "test", normalize="unit")
    assert test.num_classes == 17 and len(test.task_channels) == 5 and test.task_channels["segment_semantic"] == 17
    building, point, view = test.samples[0]
    sample, scene = test[0], render_scene([6, int(point)], SIZE)
    assert np.array_equal(sample["segment_semantic"].numpy(), scene["segment_semantic"])
    assert np.abs(sample["depth_zbuffer"][0].numpy() - scene["depth_zbuffer"]).max() <= 1 / 1024 + 1e-6
    assert np.abs(sample["normal"].numpy().transpose(1, 2, 0) - scene["normal"]).max() < 0.01
    assert np.abs(sample["keypoints2d"][0].numpy() - scene["keypoints2d"]).max() < 0.002
    assert np.abs(sample["edge_texture"][0].numpy() - scene["edge_texture"]).max() < 1e-3


def test_taskonomy_published_encodings(taskonomy_root, tmp_path):
    root = _copy(taskonomy_root, tmp_path / "d")
    stem = root / "synth002/{0}/point_5_view_0_domain_{0}.png"
    Image.fromarray(np.array([[0, 1, 17]] * 2, dtype=np.uint8)).save(str(stem).format("segment_semantic"))
    Image.fromarray(np.array([[512, 65535, 1024]] * 2, dtype=np.uint16)).save(str(stem).format("depth_zbuffer"))
    Image.fromarray(np.full((2, 3, 3), 127, np.uint8) + np.array([0, 0, 128], np.uint8)).save(str(stem).format("normal"))
    Image.fromarray(np.array([[0, 164, 65535]] * 2, dtype=np.uint16)).save(str(stem).format("keypoints2d"))
    Image.fromarray(np.array([[0, 2621, 65535]] * 2, dtype=np.uint16)).save(str(stem).format("edge_texture"))
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(str(stem).format("rgb"))
    sample = Taskonomy(root, "test")[1]
    assert sample["segment_semantic"][0].tolist() == [255, 0, 16]
    assert sample["depth_zbuffer"][0, 0].tolist() == [1.0, 0.0, 2.0]
    assert torch.allclose(sample["normal"][:, 0, 0], torch.tensor([0.0, 0.0, 1.0]), atol=0.01)
    assert (sample["normal"][:, 0, 1] == 0).all()  # invalid where depth is invalid
    assert torch.allclose(sample["keypoints2d"][0, 0], torch.tensor([0.0, 0.5, 1.0]), atol=0.01)
    assert torch.allclose(sample["edge_texture"][0, 0], torch.tensor([0.0, 0.5, 1.0]), atol=0.01)


def test_taskonomy_building_lists(taskonomy_root, tmp_path):
    assert Taskonomy(taskonomy_root, "train").buildings == ["synth000"]
    assert len(Taskonomy(taskonomy_root, buildings=["synth000", "synth001"])) == 4
    listing = tmp_path / "b.txt"
    listing.write_text("synth001\nsynth002\n")
    assert Taskonomy(taskonomy_root, "val", buildings=listing).buildings == ["synth001", "synth002"]
    official = tmp_path / "train_val_test_tiny.csv"
    official.write_text("id,train,val,test\nsynth000,0,0,1\nsynth001,1,0,0\nsynth002,0,0,1\n")
    assert Taskonomy(taskonomy_root, "test", buildings=official).buildings == ["synth000", "synth002"]
    official.write_text("synth000,0,0,1\nsynth001,1,0,0\nsynth002,0,1,0\n")  # no header
    assert Taskonomy(taskonomy_root, "train", buildings=official).buildings == ["synth001"]
    official.write_text("synth000,0,0\n")
    with pytest.raises(DatasetError, match="row 1 is not 'name,train,val,test'"):
        Taskonomy(taskonomy_root, buildings=official)
    with pytest.raises(DatasetError, match="allensville/rgb: missing folder"):
        Taskonomy(taskonomy_root, "train", buildings="tiny")
    tasks = Taskonomy(taskonomy_root, "train", tasks=["edge_texture"])
    assert set(tasks[0]) == {"image", "edge_texture"} and tasks.task_channels == {"edge_texture": 1}


def test_taskonomy_missing_file_errors_or_skips(taskonomy_root, tmp_path):
    root = _copy(taskonomy_root, tmp_path / "d")
    gone = root / "synth000/depth_zbuffer/point_0_view_0_domain_depth_zbuffer.png"
    gone.unlink()
    with pytest.raises(DatasetError, match="point_0_view_0_domain_depth_zbuffer.png: missing file"):
        Taskonomy(root, "train")
    skipping = Taskonomy(root, "train", missing="skip")
    assert len(skipping) == 1 and skipping.skipped == 1
    assert len(Taskonomy(root, "train", tasks=["segment_semantic"])) == 2  # depth not needed
    with pytest.raises(DatasetError, match="missing file"):
        Taskonomy(root, "train", tasks=["normal"])  # normals need the depth mask


# ---------- bad input: each case names the file and what was wrong ----------

def _nyu_case(root, kind):
    if kind == "missing":
        (root / "seg/0006.png").unlink()
    elif kind == "unreadable":
        (root / "img/0006.png").write_bytes(b"not a png")
    elif kind == "wrong shape":
        np.save(root / "depth/0006.npy", np.ones((*SIZE, 3), np.float32))
    elif kind == "wrong dtype":
        Image.fromarray(np.zeros(SIZE, np.uint16)).save(root / "seg/0006.png")
    elif kind == "out-of-range":
        Image.fromarray(np.full(SIZE, 50, np.uint8)).save(root / "seg/0006.png")
    elif kind == "size":
        np.save(root / "depth/0006.npy", np.ones((10, 10), np.float32))
    elif kind == "nan":
        np.save(root / "depth/0006.npy", np.full(SIZE, np.nan, np.float32))
    elif kind == "negative":
        np.save(root / "depth/0006.npy", np.full(SIZE, -1.0, np.float32))
    elif kind == "grey normals":
        Image.fromarray(np.zeros(SIZE, np.uint8)).save(root / "normal_mask/0006.png")


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", r"seg/0006.png: missing file"),
        ("unreadable", r"img/0006.png: unreadable image"),
        ("wrong shape", r"depth/0006.npy: expected shape HW or HW1, found \(24, 32, 3\)"),
        ("wrong dtype", r"seg/0006.png: expected uint8 pixels, found uint16"),
        ("out-of-range", r"seg/0006.png: out-of-range labels \[50\]"),
        ("size", r"differ in size: .*depth/0006.npy 10x10"),
        ("nan", r"depth/0006.npy: holds NaN"),
        ("negative", r"depth/0006.npy: negative depth"),
        ("grey normals", r"normal_mask/0006.png: expected a 3-channel image"),
    ],
)
def test_bad_nyu_file_gives_a_clear_error(nyu_root, tmp_path, kind, message):
    root = _copy(nyu_root, tmp_path / "d")
    _nyu_case(root, kind)
    with pytest.raises(DatasetError, match=message):
        NYUv2(root, "test")[0]


def test_bad_taskonomy_labels_and_folders(taskonomy_root, tmp_path):
    root = _copy(taskonomy_root, tmp_path / "d")
    Image.fromarray(np.full(SIZE, 30, np.uint8)).save(root / "synth000/segment_semantic/point_0_view_0_domain_segment_semantic.png")
    with pytest.raises(DatasetError, match=r"point_0_view_0_domain_segment_semantic.png: out-of-range labels \[30\]"):
        Taskonomy(root, "train")[0]
    with pytest.raises(DatasetError, match="no buildings given"):
        Taskonomy(tmp_path)
    with pytest.raises(DatasetError, match="nowhere/rgb: missing folder"):
        Taskonomy(root, buildings=["nowhere"])


def test_rgba_image_is_read_as_rgb(nyu_root, tmp_path):
    root = _copy(nyu_root, tmp_path / "d")
    rgb = np.array(Image.open(root / "img/0006.png"))
    Image.fromarray(np.dstack([rgb, np.full(SIZE, 255, np.uint8)])).save(root / "img/0006.png")
    assert torch.equal(NYUv2(root, "test")[0]["image"], NYUv2(nyu_root, "test")[0]["image"])


def test_bad_folders_and_arguments(tmp_path, nyu_root):
    with pytest.raises(DatasetError, match="not an NYU-v2 folder"):
        NYUv2(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        NYUv2(tmp_path / "nothing")
    with pytest.raises(DatasetError, match="unknown split"):
        NYUv2(nyu_root, "dev")
    with pytest.raises(DatasetError, match="unknown or empty task list"):
        NYUv2(nyu_root, tasks=["keypoints2d"])
    with pytest.raises(DatasetError, match="unknown image normalisation"):
        NYUv2(nyu_root, normalize="rgb")
    with pytest.raises(DatasetError, match="at least 3 buildings"):
        write_synthetic(tmp_path / "w", "taskonomy", n=2, size=SIZE, progress=False)
    (tmp_path / "nyu_v2_3task.json").write_text("{broken")
    with pytest.raises(DatasetError, match="unreadable JSON"):
        NYUv2(tmp_path)


def test_check_reports_counts_and_every_bad_file(nyu_root, taskonomy_root, tmp_path):
    report = check_dataset(nyu_root)
    assert report.ok and report.format == "nyuv2-adashare"
    assert {k: v.count for k, v in report.splits.items()} == {"train": 5, "val": 1, "test": 2}
    root = _copy(taskonomy_root, tmp_path / "d")
    (root / "synth001/normal/point_2_view_0_domain_normal.png").write_bytes(b"")
    (root / "synth002/rgb/point_4_view_0_domain_rgb.png").write_bytes(b"junk")
    report = check_dataset(root)
    assert not report.ok and len(report.problems) == 2
    assert "point_2_view_0_domain_normal.png: unreadable" in report.summary()
    assert report.splits["train"].count == 2 and report.splits["train"].checked == 2
