"""Joint transforms: one draw for image and targets; flips negate normal x; pads hold ignore values."""
import numpy as np
import pytest
import torch

from adapmtl.data import EvalTransform, SyntheticScenes, TrainTransform
from adapmtl.data.transforms import crop_or_pad, hflip


def _coded_sample(height=20, width=30):
    """Image, labels, depth and keypoints all encode the column index, so alignment is checkable."""
    cols = torch.arange(width).float().expand(height, width)
    normal = torch.zeros(3, height, width)
    normal[0], normal[2] = 0.6, -0.8
    return {
        "image": torch.stack([cols, cols, cols]),
        "segment_semantic": cols.long(),
        "normal": normal,
        "depth_zbuffer": (cols + 1)[None],
        "keypoints2d": (cols / width)[None],
    }


def test_flip_mirrors_everything_and_negates_normal_x_only():
    sample = _coded_sample()
    sample["normal"][:, :, :3] = 0.0  # invalid normals stay exactly zero
    flipped = hflip(sample)
    assert torch.equal(flipped["segment_semantic"][:, 0], sample["segment_semantic"][:, -1])
    assert torch.equal(flipped["image"], sample["image"].flip(-1))
    assert torch.allclose(flipped["normal"][0, :, 0], torch.tensor(-0.6))
    assert torch.allclose(flipped["normal"][2], sample["normal"][2].flip(-1))
    assert (flipped["normal"][:, :, -3:] == 0).all() and not torch.signbit(flipped["normal"][:, :, -3:]).any()


def test_pad_uses_ignore_for_labels_and_zero_for_invalid_targets():
    out = crop_or_pad(_coded_sample(10, 12), (16, 20), np.random.default_rng(0))
    assert out["segment_semantic"].shape == (16, 20)
    assert out["segment_semantic"][0, 0] == 255 and out["segment_semantic"][-1, -1] == 255
    assert out["depth_zbuffer"][0, 0, 0] == 0 and (out["normal"][:, 0, 0] == 0).all() and out["image"][0, 0, 0] == 0
    inner = out["segment_semantic"] != 255
    assert inner.sum() == 10 * 12


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_keeps_image_and_targets_aligned(seed):
    out = TrainTransform(crop=(16, 24))(_coded_sample(), np.random.default_rng(seed))
    assert out["image"].shape == (3, 16, 24) and out["segment_semantic"].shape == (16, 24)
    valid = out["segment_semantic"] != 255
    labels = out["segment_semantic"][valid].float()
    assert torch.equal(out["depth_zbuffer"][0][valid], labels + 1)
    assert torch.allclose(out["keypoints2d"][0][valid], labels / 30)
    assert (out["image"][0][valid] - labels).abs().mean() < 0.75  # bilinear image vs nearest labels
    assert (out["depth_zbuffer"][0][~valid] == 0).all()
    flipped = bool(torch.all(out["normal"][0][valid] < 0))
    assert flipped or bool(torch.all(out["normal"][0][valid] > 0))
    if valid.sum() > 1:  # columns decrease left to right exactly when flipped
        row = out["segment_semantic"][valid.any(1).nonzero()[0, 0]]
        row = row[row != 255]
        assert bool((row[1:] <= row[:-1]).all()) == flipped or len(row.unique()) == 1


def test_eval_transform_resizes_or_keeps_full_resolution():
    sample = _coded_sample()
    assert EvalTransform()(sample, np.random.default_rng(0)) is sample
    out = EvalTransform((10, 15))(sample, np.random.default_rng(0))
    assert out["segment_semantic"].shape == (10, 15) and out["segment_semantic"].dtype == torch.int64


def test_draws_are_per_item_reproducible_and_change_with_epoch():
    dataset = SyntheticScenes(3, (24, 32), seed=4, transform=TrainTransform(crop=20))
    first, again = dataset[1], dataset[1]
    assert all(torch.equal(first[k], again[k]) for k in first)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1]["image"], first["image"])
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3)))
    assert batch["normal"].shape == (3, 3, 20, 20)


def test_paper_convention_pads_the_image_black_and_flips_normals_as_an_image():
    from adapmtl.data.transforms import black_after

    black = black_after("bgr_mean")  # the original pads the raw image with 0, then subtracts the BGR mean
    assert torch.allclose(black, torch.tensor([-104.00698793, -116.66876762, -122.67891434]))
    sample = _coded_sample(height=4, width=6)
    padded = crop_or_pad(sample, (8, 10), np.random.default_rng(0), image_pad=black)
    assert torch.equal(padded["image"][:, 0, 0], black) and torch.equal(padded["image"][:, 2:6, 2:8], sample["image"])
    assert int(padded["segment_semantic"][0, 0]) == 255  # targets keep their own fill values
    kept = hflip(sample, negate_normal_x=False)["normal"]
    assert torch.equal(kept, sample["normal"].flip(-1))  # x not negated: the original's flip
    assert torch.equal(hflip(sample)["normal"][0], -sample["normal"][0].flip(-1))


def test_the_engine_pads_black_only_under_the_paper_convention():
    from adapmtl.engine import load_config
    from adapmtl.engine.data import build_dataset

    def corner(convention):
        config = load_config("quickstart", [f"convention={convention}", "data.normalize=bgr_mean",
                                            "data.scale=[0.5,0.5]", "data.synthetic_train=2"])
        return build_dataset(config, "train")[0]["image"][:, 0, 0]  # half-size scene: the corner is padding

    assert torch.allclose(corner("paper"), torch.tensor([-104.00698793, -116.66876762, -122.67891434]))
    assert torch.equal(corner("corrected"), torch.zeros(3))
