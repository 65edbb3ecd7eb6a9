"""`stillmotion demo` (what `make demo` runs) on the bundled example."""

from __future__ import annotations

import json

import av
import pytest

from stillmotion.cli import main


def test_demo_writes_field_picture_and_warp_video(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["demo", "-o", str(out), "--frames", "8", "--engine", "warp"])
    assert exc.value.code == 0
    assert (out / "motion_field.png").stat().st_size > 0
    with av.open(str(out / "warp.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 8
    report = json.loads((out / "warp.json").read_text())
    assert report["engine"] == "warp" and report["frames"] == 8
    assert "wrote" in capsys.readouterr().out


def test_demo_rejects_a_bad_frame_count(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "-o", str(tmp_path / "out"), "--frames", "0"])
    assert exc.value.code == 2
    assert not (tmp_path / "out").exists()
