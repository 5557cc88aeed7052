"""Synthetic scenes: determinism, exact and related targets, the dataset interface."""
import numpy as np
import torch

from adapmtl.data import SCENE_CLASSES, SyntheticScenes, render_scene
from adapmtl.tasks import TASK_NAMES


def test_same_seed_same_scene_other_seed_other_scene():
    a, b, c = render_scene([7, 3], (24, 32)), render_scene([7, 3], (24, 32)), render_scene([7, 4], (24, 32))
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert not np.array_equal(a["depth_zbuffer"], c["depth_zbuffer"])


def test_targets_have_the_documented_types_and_ranges():
    scene = render_scene([0, 1], (36, 48))
    assert scene["image"].dtype == np.uint8 and scene["image"].shape == (36, 48, 3)
    assert scene["image"].std() > 10  # lit and textured, not flat
    assert scene["segment_semantic"].max() < len(SCENE_CLASSES)
    depth = scene["depth_zbuffer"]
    assert depth.shape == (36, 48) and 0.3 < depth.min() and depth.max() < 12.0  # indoor metres
    assert np.allclose(np.linalg.norm(scene["normal"], axis=2), 1.0, atol=1e-5)
    for key in ("keypoints2d", "edge_texture"):
        assert scene[key].min() >= 0 and scene[key].max() <= 1 and scene[key].max() > 0.5


def test_floor_normals_point_up_in_the_camera_frame_and_are_planar():
    scenes = [render_scene([3, i], (48, 64)) for i in range(4)]
    scene = max(scenes, key=lambda s: (s["segment_semantic"] == 0).sum())
    floor = scene["normal"][scene["segment_semantic"] == SCENE_CLASSES.index("floor")]
    assert len(floor) > 50
    assert np.allclose(floor, floor[0], atol=1e-6)  # one plane, one normal
    assert floor[0, 1] < -0.8  # camera y points down, the floor faces up


def test_every_label_boundary_is_an_edge():
    scene = render_scene([5, 2], (48, 64))
    labels, edges = scene["segment_semantic"], scene["edge_texture"]
    boundary = labels[:, 1:] != labels[:, :-1]
    assert boundary.any()
    assert (edges[:, 1:][boundary] == 1).all() and (edges[:, :-1][boundary] == 1).all()


def test_scene_is_the_same_at_any_resolution():
    small, large = render_scene([2, 9], (30, 40)), render_scene([2, 9], (90, 120))
    fractions = [np.bincount(s["segment_semantic"].ravel(), minlength=8) / s["segment_semantic"].size for s in (small, large)]
    assert np.abs(fractions[0] - fractions[1]).max() < 0.05
    assert abs(np.median(small["depth_zbuffer"]) / np.median(large["depth_zbuffer"]) - 1) < 0.05


def test_dataset_yields_requested_tasks_and_collates():
    dataset = SyntheticScenes(4, (24, 32), seed=1, tasks=["segment_semantic", "depth_zbuffer"])
    assert dataset.task_channels == {"segment_semantic": 8, "depth_zbuffer": 1}
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert set(batch) == {"image", "segment_semantic", "depth_zbuffer"}
    assert batch["image"].shape == (4, 3, 24, 32) and batch["image"].dtype == torch.float32
    assert batch["segment_semantic"].dtype == torch.int64 and batch["depth_zbuffer"].shape == (4, 1, 24, 32)
    full = SyntheticScenes(1, (24, 32), seed=1)
    assert set(full[0]) == {"image", *TASK_NAMES} and full.task_channels["segment_semantic"] == 8


def test_scene_seed_draws_the_scenes_and_seed_the_transform():
    def flip(sample, rng):  # a transform whose draw shows in the output
        return {**sample, "image": sample["image"].flip(-1) if rng.random() < 0.5 else sample["image"]}

    plain = SyntheticScenes(6, (24, 32), seed=4)
    split = SyntheticScenes(6, (24, 32), seed=9, scene_seed=4, transform=flip)
    assert all(torch.equal(plain[i]["depth_zbuffer"], split[i]["depth_zbuffer"]) for i in range(6))
    flipped = [not torch.equal(plain[i]["image"], split[i]["image"]) for i in range(6)]
    expected = [np.random.default_rng([9, 0, i]).random() < 0.5 for i in range(6)]
    assert flipped == expected and any(expected) and not all(expected)
