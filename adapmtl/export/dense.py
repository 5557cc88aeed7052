"""Dense export: the finalized model as an ordinary state dict plus the spec that rebuilds it.

    model_dense.safetensors   plain state dict (zeros included), metadata: format "adapmtl-dense",
                              version, sha256, model (the ModelSpec as JSON)
    model_dense.json          the same ModelSpec, for readers that skip safetensors metadata

Rebuild without adapmtl's sparsity code:
    spec = json.load(open("model_dense.json"))
    model = create_model(spec["name"], spec["tasks"], width=spec["width"], head_channels=spec["head_channels"],
                         dropout=spec["dropout"], upsample=spec["upsample"], aspp_rates=spec["aspp_rates"])
    # or, for your own factory ("mypkg.nets:build"): model = build(tasks=spec["tasks"], **spec["options"])
    model.load_state_dict(safetensors.torch.load_file("model_dense.safetensors"))
(`load_dense` does the same and also verifies the checksum.) The keys are your model's own: the
file loads into your unmodified model class.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from adapmtl.container import encode_checked, read_checked
from adapmtl.files import write_atomic
from adapmtl.models.spec import ModelSpec

DENSE_FORMAT = "adapmtl-dense"


def encode_dense(state: Mapping[str, torch.Tensor], spec: ModelSpec, *, half: bool = False) -> bytes:
    """The dense file's bytes; `half` stores floating tensors as fp16 (loaded back as fp32).

    Values beyond fp16's range become inf with `half` (the sparse format refuses them instead).
    """
    tensors = {k: v.half() if half and v.is_floating_point() else v for k, v in state.items()}
    return encode_checked(tensors, DENSE_FORMAT, {"model": json.dumps(spec.to_dict()),
                                                  "dtype": "float16" if half else "float32"})


def write_dense(state: Mapping[str, torch.Tensor], spec: ModelSpec, path: str | Path, *, half: bool = False) -> Path:
    """Write `state` to `path` (.safetensors) and the spec beside it (same stem, .json).

    Raises OSError naming the file if it cannot be written."""
    path = write_atomic(path, encode_dense(state, spec, half=half))
    write_atomic(path.with_suffix(".json"), (json.dumps(spec.to_dict(), indent=2) + "\n").encode())
    return path


def load_dense(path: str | Path) -> nn.Module:
    """The model of a dense export, rebuilt from its spec (a registered model or the factory it names: `ModelSpec.build`), weights in fp32, eval mode.

    Raises ExportError if the file is missing, damaged or not a dense export, ModelError if
    its spec is invalid."""
    tensors, metadata = read_checked(path, DENSE_FORMAT)
    model = ModelSpec.from_dict(json.loads(metadata.get("model", "{}")), where=str(path)).build()
    model.load_state_dict(tensors)
    return model.eval()
