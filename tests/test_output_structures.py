"""Models whose forward returns more than a flat {task: tensor} dict: nested auxiliary outputs, a
dataclass, a tuple per task. Each is exported, compiled or refused clearly, never half-written."""
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from adapmtl.errors import ExportError
from adapmtl.export.onnx import onnx_session, write_onnx
from adapmtl.inference import compile_sparse
from adapmtl.models.errors import ModelError
from adapmtl.models.outputs import task_outputs
from adapmtl.models.spec import ModelSpec

SPEC = ModelSpec("tests.user_models:unet", {"segment_semantic": 2})


class NestedAux(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seg, self.aux = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 1, 1)

    def forward(self, x):
        return {"segment_semantic": self.seg(x), "aux": (self.aux(x), 2 * self.aux(x))}


@dataclass
class Out:
    seg: torch.Tensor
    depth: torch.Tensor


class DataclassOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight[0] = 0  # something sparse to compile

    def forward(self, x):
        y = self.conv(x)
        return Out(y, y[:, :1])


def test_nested_auxiliary_outputs_export_with_dotted_names(tmp_path):
    path, difference = write_onnx(NestedAux(), SPEC, tmp_path / "m.onnx", (8, 8))
    assert [o.name for o in onnx_session(path).get_outputs()] == ["segment_semantic", "aux.0", "aux.1"]
    assert difference < 1e-5


def test_an_output_onnx_cannot_hold_is_refused_and_leaves_no_file(tmp_path):
    with pytest.raises(ExportError, match="is a Out; ONNX export needs tensors"):
        write_onnx(DataclassOut(), SPEC, tmp_path / "m.onnx", (8, 8))
    assert list(tmp_path.iterdir()) == []


def test_compile_checks_a_dataclass_output_field_by_field():
    model, x = DataclassOut(), torch.randn(1, 3, 8, 8)
    got = compile_sparse(model, x)(x)
    assert isinstance(got, Out) and torch.allclose(got.seg, model(x).seg) and got.depth.shape == (1, 1, 8, 8)


def test_a_task_output_that_is_not_one_tensor_is_named():
    with pytest.raises(ModelError, match="output for task 'normal' is a tuple, expected one tensor"):
        task_outputs({"segment_semantic": torch.zeros(1), "normal": (torch.zeros(1), 0.5)},
                     ["segment_semantic", "normal"])
