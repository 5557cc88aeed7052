"""Files out of a finished run: dense state dict, compact sparse file, ONNX.

    from adapmtl.export import export_run, load_dense, load_sparse, onnx_session
    info = export_run("runs/quickstart/adapmtl", "sparse", half=True)
    print(info.summary())                 # path, size, ratio to the dense fp32 file
    model = load_sparse(info.path)        # the exact finalized model (fp16-rounded values with half)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from adapmtl.container import read_checked
from adapmtl.export.dense import DENSE_FORMAT, encode_dense, load_dense, write_dense
from adapmtl.errors import ExportError
from adapmtl.export.onnx import check_onnx, onnx_session, write_onnx
from adapmtl.export.sparse import SPARSE_FORMAT, encode_sparse, load_sparse, load_sparse_state, write_sparse
from adapmtl.engine.rundir import RunDir
from adapmtl.models.spec import ModelSpec

FORMATS = ("dense", "sparse", "onnx")
DEFAULT_NAMES = {"dense": "model_dense.safetensors", "sparse": "model_sparse.safetensors", "onnx": "model.onnx"}

__all__ = [
    "DENSE_FORMAT", "SPARSE_FORMAT", "FORMATS", "ExportError", "ExportInfo", "ModelSpec",
    "check_onnx", "encode_dense", "encode_sparse", "export_run", "load_dense",
    "load_sparse", "load_sparse_state", "onnx_session", "read_checked", "write_dense", "write_onnx", "write_sparse",
]


@dataclass(frozen=True)
class ExportInfo:
    """What `export_run` wrote: `bytes` of the file and `dense_bytes` of the dense fp32 export
    of the same model (the reference of `ratio`); `max_abs_diff`: ONNX vs PyTorch outputs."""

    path: Path
    format: str
    half: bool
    bytes: int
    dense_bytes: int
    max_abs_diff: float | None = None

    @property
    def ratio(self) -> float:
        """`bytes` / `dense_bytes`."""
        return self.bytes / self.dense_bytes

    def summary(self) -> str:
        """One line for people: path, format, size and ratio (and the ONNX difference)."""
        text = (f"wrote {self.path} ({self.format}{', fp16' if self.half else ''}): {self.bytes:,} bytes, "
                f"{self.ratio:.4f}x the dense fp32 file ({self.dense_bytes:,} bytes)")
        if self.max_abs_diff is not None:
            text += f"; onnxruntime vs PyTorch: max |difference| {self.max_abs_diff:.3g}"
        return text


def default_input_size(run_dir: str | Path) -> tuple[int, int]:
    """(H, W) the run evaluated at: data.eval_size, else data.crop, else data.synthetic_size, else 321×321.

    Raises RunDirError if the folder holds no run or a damaged config.yaml, ConfigError if it is invalid.
    """
    data = RunDir(run_dir).config().data
    for size in (data.eval_size, data.crop, data.synthetic_size if data.dataset == "synthetic" else None):
        if size:
            return int(size[0]), int(size[1])
    return 321, 321


def export_run(run_dir: str | Path, format: str, out: str | Path | None = None, *, half: bool = False,
               input_size: Sequence[int] | None = None) -> ExportInfo:
    """Export a finished run's finalized model (its model.safetensors) as `format`:
    "dense" (state dict + spec), "sparse" (bitmask + values; `half`: fp16 values) or "onnx"
    (checked with onnxruntime at `input_size` (H, W), default: the run's evaluation size).
    `out`: the file to write (default: RUN_DIR/export/<model_dense|model_sparse[_fp16]>.safetensors or model.onnx).
    Raises ExportError for an unknown format, `half` with ONNX, fp16 overflow, or a failed or
    inaccurate ONNX export; RunDirError (or ModelError, ConfigError, CheckpointError) if the run is
    not finished or its files are damaged; OSError if `out` cannot be written.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; expected one of {FORMATS}")
    if half and format == "onnx":
        raise ExportError("--half applies to the dense and sparse formats; ONNX is exported in fp32")
    if input_size is not None and (len(input_size) != 2 or min(input_size) < 1):
        raise ExportError(f"input size must be two positive integers (H, W), got {tuple(input_size)}")
    if out is not None and Path(out).is_dir():
        raise ExportError(f"--out {out} is a folder; give the file to write, e.g. {Path(out) / DEFAULT_NAMES[format]}")
    model, spec = RunDir(run_dir).load_model()
    state = model.state_dict()
    if out is None:
        name = DEFAULT_NAMES[format]
        out = RunDir(run_dir).export_dir / (name.replace(".safetensors", "_fp16.safetensors") if half else name)
    max_diff = None
    if format == "dense":
        path = write_dense(state, spec, out, half=half)
    elif format == "sparse":
        path = write_sparse(state, spec, out, half=half)
    else:
        path, max_diff = write_onnx(model, spec, out, input_size or default_input_size(run_dir))
    return ExportInfo(Path(path), format, half, Path(path).stat().st_size, len(encode_dense(state, spec)), max_diff)
