"""Registries filled at the definition site: datasets, weightings, models; task facts from adapmtl.tasks."""
import pytest
import torch
from torch import nn

import adapmtl.data.registry
import adapmtl.models.registry
import adapmtl.weighting.base
from adapmtl.data import DatasetError, NYUv2, SyntheticScenes, Taskonomy, available_datasets, create_dataset, dataset_class
from adapmtl.data import register_dataset
from adapmtl.data.transforms import PAD_VALUES
from adapmtl.engine.config import Config, DataConfig
from adapmtl.engine.data import build_dataset, build_tasks
from adapmtl.models import ModelError, available_models, create_model, register_model
from adapmtl.tasks import (
    DATASET_TASKS,
    FILL_VALUES,
    IGNORE_INDEX,
    TASK_NAMES,
    SegmentationTask,
    TaskError,
    task_channels,
)
from adapmtl.weighting import WEIGHTINGS, TaskWeighting, WeightingError, create_weighting, register_weighting


@pytest.fixture
def fresh_registries(monkeypatch):
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(adapmtl.data.registry, "DATASETS", adapmtl.data.registry.DATASETS.copy())
    monkeypatch.setattr(adapmtl.weighting.base, "WEIGHTINGS", adapmtl.weighting.base.WEIGHTINGS.copy())
    monkeypatch.setattr(adapmtl.models.registry, "BACKBONES", adapmtl.models.registry.BACKBONES.copy())


# ---------------------------------------------------------------- task facts

def test_task_channels_per_task_and_dataset():
    assert task_channels(DATASET_TASKS["taskonomy"], 17) == {
        "segment_semantic": 17, "normal": 3, "depth_zbuffer": 1, "keypoints2d": 1, "edge_texture": 1,
    }
    assert list(task_channels(["depth_zbuffer", "segment_semantic"], 40)) == ["depth_zbuffer", "segment_semantic"]
    with pytest.raises(TaskError, match=r"unknown task\(s\) \['depth'\]"):
        task_channels(["depth"], 40)


def test_dataset_tasks_and_fill_values():
    assert DATASET_TASKS == {"nyuv2": ("segment_semantic", "normal", "depth_zbuffer"), "taskonomy": TASK_NAMES}
    assert FILL_VALUES == {"segment_semantic": 255, "normal": 0.0, "depth_zbuffer": 0.0, "keypoints2d": 0.0,
                           "edge_texture": 0.0}
    assert SegmentationTask.fill_value == IGNORE_INDEX == 255


def test_data_takes_its_task_facts_from_tasks():
    assert PAD_VALUES == {"image": 0.0, **FILL_VALUES}
    assert SyntheticScenes(1, (8, 8), tasks=["normal", "segment_semantic"]).task_channels == {
        "normal": 3, "segment_semantic": 8,
    }
    with pytest.raises(DatasetError, match="available: .*'edge_texture'"):
        SyntheticScenes(1, tasks=["edges"])


# ---------------------------------------------------------------- datasets

def test_the_built_in_datasets_are_registered_where_they_are_defined():
    assert available_datasets() == ["nyuv2", "synthetic", "taskonomy"]
    assert (dataset_class("nyuv2"), dataset_class("synthetic"), dataset_class("taskonomy")) == (NYUv2, SyntheticScenes, Taskonomy)
    assert (NYUv2.metric_set, SyntheticScenes.metric_set, Taskonomy.metric_set) == ("nyuv2", "nyuv2", "taskonomy")
    with pytest.raises(DatasetError, match=r"unknown dataset 'cityscapes'; expected one of nyuv2, synthetic, taskonomy"):
        create_dataset("cityscapes")
    scenes = create_dataset("synthetic", 3, (8, 8), seed=5)
    assert isinstance(scenes, SyntheticScenes) and (len(scenes), scenes.seed) == (3, 5)


def test_a_new_dataset_is_one_decorated_class(fresh_registries):
    @register_dataset("tiny")
    class Tiny(SyntheticScenes):
        metric_set = "taskonomy"

        @classmethod
        def from_config(cls, data, split, transform, seed):
            return cls(2, (8, 8), seed=seed, tasks=data.tasks, transform=transform)

    assert available_datasets() == ["nyuv2", "synthetic", "taskonomy", "tiny"]
    config = Config.model_construct(seed=4, data=DataConfig.model_construct(
        dataset="tiny", tasks=["keypoints2d"], crop=None, eval_size=None, metrics=None))
    dataset = build_dataset(config, "val")
    assert isinstance(dataset, Tiny) and (len(dataset), dataset.seed, dataset.tasks) == (2, 4, ("keypoints2d",))
    assert build_tasks(config, dataset)["keypoints2d"].metrics == ("keypoint_err",)
    with pytest.raises(DatasetError, match="a dataset named 'tiny' is already registered"):
        register_dataset("tiny")(SyntheticScenes)


def test_synthetic_from_config_stands_in_for_nyuv2():
    config = Config(seed=2, data=DataConfig(synthetic_train=5, synthetic_val=3, synthetic_size=(16, 24), crop=None))
    train, val = build_dataset(config, "train"), build_dataset(config, "val")
    assert (len(train), len(val), train.size) == (5, 3, (16, 24))
    assert (train.seed, val.seed) == (6, 7)  # each split its own scene stream
    assert train.tasks == DATASET_TASKS["nyuv2"] and train.transform is None
    assert list(build_tasks(config, train)["normal"].metrics) == ["angle_mean", "angle_median", "within_11_25",
                                                                  "within_22_5", "within_30"]
    with pytest.raises(DatasetError, match="unknown split 'trainval'"):
        SyntheticScenes.from_config(config.data, "trainval", None, 0)


@pytest.mark.parametrize("dataset", ["nyuv2", "taskonomy"])
def test_a_dataset_read_from_a_folder_needs_data_root(dataset):
    config = Config(data=DataConfig(dataset=dataset))
    with pytest.raises(DatasetError, match=rf"`data.root` is required for data.dataset='{dataset}'"):
        build_dataset(config, "train")


# ---------------------------------------------------------------- weightings

def test_the_built_in_weightings_declare_their_options():
    assert sorted(WEIGHTINGS) == ["adaptive", "equal"]
    assert (WEIGHTINGS["equal"].options, WEIGHTINGS["adaptive"].options) == ((), ("begin", "window"))
    adaptive = create_weighting("adaptive", ["a", "b"], 100, begin=3, window=None)
    assert (adaptive.begin, adaptive.window) == (3, 2)  # window None: the default, scaled to 100 steps
    with pytest.raises(WeightingError, match=r"weighting 'adaptive' takes only \['begin', 'window'\], got \{'temperature': 2\}"):
        create_weighting("adaptive", ["a"], 100, temperature=2)


def test_a_new_weighting_is_one_decorated_class(fresh_registries):
    @register_weighting
    class Scaled(TaskWeighting):
        name = "scaled"
        options = ("factor",)

        def __init__(self, tasks, total_steps, factor=1.0):
            super().__init__(tasks, total_steps)
            self.factor = factor

        def weights(self):
            return {t: self.factor for t in self.tasks}

    assert "scaled" in adapmtl.weighting.base.WEIGHTINGS
    assert create_weighting("scaled", ["a", "b"], 10, factor=0.5).weights() == {"a": 0.5, "b": 0.5}
    with pytest.raises(WeightingError, match="a weighting named 'equal' is already registered"):
        register_weighting(type("Other", (Scaled,), {"name": "equal"}))


# ---------------------------------------------------------------- models

class TinyBackbone(nn.Module):
    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.out_channels = max(1, round(4 * width))
        self.conv = nn.Conv2d(3, self.out_channels, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def test_a_new_model_registers_by_decorator_or_call(fresh_registries):
    assert register_model("tiny")(TinyBackbone) is TinyBackbone
    assert register_model("tiny_again", TinyBackbone) is TinyBackbone
    assert available_models() == ["deeplab_resnet34", "mobilenetv2", "tiny", "tiny_again"]
    model = create_model("tiny", {"depth_zbuffer": 1}, width=2.0, head_channels=4)
    assert model(torch.zeros(1, 3, 8, 8))["depth_zbuffer"].shape == (1, 1, 8, 8)
    with pytest.raises(ModelError, match="a model named 'mobilenetv2' is already registered"):
        register_model("mobilenetv2", TinyBackbone)
