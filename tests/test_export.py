"""Export: dense, sparse (fp32 and fp16) and ONNX files round-trip; sizes; damaged files are errors."""
import json

import pytest
import torch
from safetensors.torch import load_file

from adapmtl.cli import main
from adapmtl.engine import RunDir
from adapmtl.export import (ExportError, encode_dense, encode_sparse, export_run, load_dense,
                            load_sparse, load_sparse_state, onnx_session)
from tests.report_helpers import pruned_model, runs  # noqa: F401  (runs: a session fixture)


def _outputs(model, image):
    with torch.no_grad():
        return model(image)


@pytest.fixture(scope="module")
def image():
    return torch.randn(2, 3, 24, 32, generator=torch.Generator().manual_seed(1))


def test_dense_and_sparse_round_trip_exactly(runs, image, tmp_path):
    finalized, spec = RunDir(runs["adapmtl"]).load_model()
    expected = _outputs(finalized, image)
    dense = export_run(runs["adapmtl"], "dense", tmp_path / "d.safetensors")
    sparse = export_run(runs["adapmtl"], "sparse", tmp_path / "s.safetensors")
    for model in (load_dense(dense.path), load_sparse(sparse.path)):
        got = _outputs(model, image)
        assert list(got) == ["segment_semantic", "normal", "depth_zbuffer"]
        for task in expected:
            assert torch.equal(got[task], expected[task]), task
    state, _ = load_sparse_state(sparse.path)
    original = load_file(str(runs["adapmtl"] / "model.safetensors"))
    assert all(torch.equal(state[k], original[k]) for k in original)  # bit-exact weights, zeros included
    # the dense file is an ordinary state dict + a JSON spec: create_model rebuilds it, no adapmtl sparsity code
    from adapmtl.models import create_model

    spec = json.loads(dense.path.with_suffix(".json").read_text())  # the recipe of adapmtl/export/dense.py
    plain = create_model(spec["name"], spec["tasks"], width=spec["width"], head_channels=spec["head_channels"],
                         dropout=spec["dropout"], upsample=spec["upsample"], aspp_rates=tuple(spec["aspp_rates"]))
    plain.load_state_dict(load_file(str(dense.path)))
    assert torch.equal(_outputs(plain.eval(), image)["normal"], expected["normal"])
    assert sparse.ratio < 0.2 and dense.ratio == 1.0


def test_half_exports_are_within_fp16_tolerance(runs, image, tmp_path):
    finalized, _ = RunDir(runs["adapmtl"]).load_model()
    expected = _outputs(finalized, image)
    info = export_run(runs["adapmtl"], "sparse", tmp_path / "h.safetensors", half=True)
    dense = export_run(runs["adapmtl"], "dense", tmp_path / "hd.safetensors", half=True)
    assert dense.ratio < 0.52
    for model in (load_sparse(info.path), load_dense(dense.path)):
        got = _outputs(model, image)
        for task in expected:
            torch.testing.assert_close(got[task], expected[task], rtol=1e-2, atol=1e-2 * float(expected[task].abs().max()))
    state, _ = load_sparse_state(info.path)
    original = load_file(str(runs["adapmtl"] / "model.safetensors"))
    for key, value in original.items():  # each weight rounded once to fp16, the zeros kept exactly
        if value.is_floating_point():
            assert torch.equal(state[key], value.half().float()), key


def test_size_ratio_at_90_percent():
    model, spec = pruned_model(0.9)
    state = model.state_dict()
    dense = len(encode_dense(state, spec))
    assert len(encode_sparse(state, spec)) / dense <= 0.15
    assert len(encode_sparse(state, spec, half=True)) / dense <= 0.08


def test_onnx_matches_pytorch(runs, tmp_path):
    info = export_run(runs["adapmtl"], "onnx", tmp_path / "m.onnx")
    assert info.max_abs_diff is not None and info.max_abs_diff < 1e-4
    finalized, _ = RunDir(runs["adapmtl"]).load_model()
    image = torch.randn(3, 3, 24, 32, generator=torch.Generator().manual_seed(2))  # another batch size
    session = onnx_session(info.path)
    got = session.run(None, {"image": image.numpy()})
    expected = _outputs(finalized, image)
    assert [o.name for o in session.get_outputs()] == list(expected)
    for ours, theirs in zip(got, expected.values()):
        torch.testing.assert_close(torch.from_numpy(ours), theirs, rtol=1e-4, atol=1e-4)
    data = info.path.read_bytes()
    info.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="checksum mismatch"):
        onnx_session(info.path)


@pytest.mark.parametrize("fmt,loader", [("dense", load_dense), ("sparse", load_sparse)])
def test_damaged_files_are_errors(runs, tmp_path, fmt, loader):
    path = export_run(runs["adapmtl"], fmt, tmp_path / f"{fmt}.safetensors").path
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ExportError, match=f"{path.name}.*truncated or corrupted"):
        loader(path)
    flipped = bytearray(data)
    flipped[-50] ^= 0xFF  # one byte of tensor data
    path.write_bytes(bytes(flipped))
    with pytest.raises(ExportError, match=f"{path.name}: checksum mismatch"):
        loader(path)
    edited = data.replace(b'"width\\": 0.125', b'"width\\": 0.250', 1)  # the model spec inside the metadata
    assert edited != data and len(edited) == len(data)
    path.write_bytes(edited)
    with pytest.raises(ExportError, match="checksum mismatch"):
        loader(path)
    path.write_bytes(data)
    other = load_dense if loader is load_sparse else load_sparse
    with pytest.raises(ExportError, match="expected an 'adapmtl-"):
        other(path)


def test_export_cli_prints_the_ratio(runs, tmp_path, capsys):
    assert main(["export", str(runs["adapmtl"]), "--format", "sparse", "--half", "--out", str(tmp_path / "x.safetensors")]) == 0
    assert "x the dense fp32 file" in capsys.readouterr().out
    assert main(["export", str(runs["adapmtl"]), "--format", "onnx", "--half"]) == 2
    assert "--half applies" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--format", "dense"]) == 2
