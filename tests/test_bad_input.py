"""Bad input found in review: each is a message naming the problem, never a bare traceback."""
import json

import pytest
import torch

from adapmtl.data import DatasetError, NYUv2, SyntheticScenes, TrainTransform
from adapmtl.metrics import MetricError, delta_t
from adapmtl.tasks import TaskError, get_task


def test_delta_t_needs_nested_mappings():
    with pytest.raises(MetricError, match=r"results must be \{task: \{metric: value\}\}"):
        delta_t({"a": 1}, {"a": 2})


def test_get_task_metrics_of_the_wrong_type():
    with pytest.raises(TaskError, match="metrics must be a dataset name or a list of metric names, got 5"):
        get_task("normal", metrics=5)


@pytest.mark.parametrize("kwargs, message", [({"crop": 0}, "crop must be positive"),
                                             ({"crop": 8, "scale": (2, 1)}, "scale must be")])
def test_train_transform_arguments(kwargs, message):
    with pytest.raises(DatasetError, match=message):
        TrainTransform(**kwargs)


def test_a_single_task_name_is_accepted():
    assert SyntheticScenes(1, size=(8, 8), tasks="normal").tasks == ("normal",)


def test_nyu_json_with_non_path_entries(tmp_path):
    (tmp_path / "nyu_v2_3task.json").write_text(json.dumps({"train": [[1, 2, 3, 4]], "test": []}))
    with pytest.raises(DatasetError, match="must be a list of \\[img, seg, normal, depth\\] path lists"):
        NYUv2(tmp_path, "train", format="adashare")


def test_a_nan_normal_prediction_is_not_scored():
    meter = get_task("normal").accumulator()
    target = torch.nn.functional.normalize(torch.rand(1, 3, 2, 2), dim=1)
    meter.update(torch.full((1, 3, 2, 2), float("nan")), target)
    assert torch.isnan(torch.tensor(meter.compute()["angle_mean"]))
