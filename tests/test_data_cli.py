"""`adapmtl data synth` and `adapmtl data check` end to end."""
from PIL import Image

from adapmtl.cli import main
from adapmtl.data import NYUv2


def test_synth_then_check_then_break_a_file(tmp_path, capsys):
    out, preview = tmp_path / "nyu", tmp_path / "preview.png"
    args = ["data", "synth", "--out", str(out), "--format", "nyuv2", "--n", "6", "--size", "24", "32", "--preview", str(preview)]
    assert main(args) == 0
    assert len(NYUv2(out, "test")) == 1
    with Image.open(preview) as im:
        assert im.size[0] > 6 * 32 and im.size[1] > 6 * 24
    assert main(["data", "check", str(out)]) == 0
    assert "0 problem(s)" in capsys.readouterr().out
    (out / "depth" / "0002.npy").write_bytes(b"junk")
    assert main(["data", "check", str(out)]) == 1
    assert "0002.npy: unreadable" in capsys.readouterr().out


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path)]) == 2
    assert "unknown dataset format" in capsys.readouterr().err
    assert main(["data", "synth"]) == 2
