"""A tiny configuration that trains in a second or two on CPU, for engine tests."""
from __future__ import annotations

from pathlib import Path

from adapmtl.engine import load_config

TINY = [
    "data.synthetic_size=[24,32]", "data.crop=[24,32]", "data.scale=[0.8,1.2]",
    "data.synthetic_train=16", "data.synthetic_val=8", "data.synthetic_test=8",
    "data.batch_size=4", "data.eval_batch_size=8",
    "model.width=0.125", "model.head_channels=8",
    "train.steps=12", "train.log_every=2", "train.val_every=4", "train.checkpoint_every=4",
    "train.lr_step=6", "train.progress=false", "method.target=0.8",
]


def tiny_config(tmp_path: Path, *overrides: str):
    return load_config(None, [*TINY, f"out_dir={tmp_path}", *overrides])
