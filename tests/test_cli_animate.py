"""`stillmotion animate` end to end: files, report, --motion formats, --size, clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from stillmotion.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "stillmotion" / "assets" / "examples"
IMAGE = str(EXAMPLES / "waterfall.jpg")
ARROWS = str(EXAMPLES / "waterfall_arrows.json")


def run(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["animate", *args])
    return exit_info.value.code, capsys.readouterr().err


def video_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_animate_writes_video_report_and_field_picture(tmp_path, capsys):
    out, report, field = tmp_path / "loop.mp4", tmp_path / "r.json", tmp_path / "field.png"
    code, err = run(capsys, IMAGE, "--arrows", ARROWS, "-o", str(out), "--frames", "8", "--fps", "12",
                    "--size", "160x90", "--report", str(report), "--save-motion", str(field))  # fmt: skip
    assert code == 0, err
    frames = video_frames(out)
    assert len(frames) == 8 and frames[0].shape == (90, 160, 3)
    doc = json.loads(report.read_text())
    for key in ("engine", "frames", "width", "height", "fps", "seconds_total", "seconds_render",
                "seconds_encode", "peak_memory_mb"):  # fmt: skip
        assert key in doc
    assert (doc["engine"], doc["frames"], doc["fps"]) == ("warp", 8, 12.0)
    assert (doc["width"], doc["height"]) == (160, 90)
    assert 0 < doc["seconds_render"] <= doc["seconds_total"] and doc["peak_memory_mb"] > 0
    assert field.stat().st_size > 0
    assert "wrote" in err


def test_masked_out_pixels_survive_the_png_folder_exactly(tmp_path, capsys):
    from stillmotion.inputs.image import load_image
    from stillmotion.inputs.mask import load_mask

    out = tmp_path / "frames"
    code, err = run(capsys, IMAGE, "--arrows", ARROWS, "--mask", str(EXAMPLES / "waterfall_mask.png"),
                    "-o", str(out) + "/", "--frames", "5", "--no-loop")  # fmt: skip
    assert code == 0, err
    image = load_image(IMAGE)
    mask = load_mask(EXAMPLES / "waterfall_mask.png", image.shape[1], image.shape[0])
    files = sorted(out.iterdir())
    assert len(files) == 5
    from PIL import Image

    last = np.asarray(Image.open(files[-1]).convert("RGB"))
    assert np.array_equal(last[~mask], image[~mask])
    assert not np.array_equal(last[mask], image[mask])


def test_motion_from_npy_and_flo_files(tmp_path, capsys):
    from stillmotion.io.flo import write_flo

    field = np.zeros((45, 80, 2), np.float32)
    field[10:40, 20:60] = (1.0, 0.5)
    np.save(tmp_path / "f.npy", np.moveaxis(field, -1, 0))  # (2, H, W) layout
    write_flo(tmp_path / "f.flo", field)
    for name in ("f.npy", "f.flo"):
        out = tmp_path / f"{name}.gif"
        code, err = run(capsys, IMAGE, "--motion", str(tmp_path / name), "--frames", "4", "--size", "160x90",
                        "-o", str(out))  # fmt: skip
        assert code == 0, err
        assert len(video_frames(out)) == 4


def test_stylecinegan_motion_field(tmp_path, capsys, shared_data):
    sample = shared_data / "images" / "stylecinegan" / "0000008"
    out, report = tmp_path / "scg.webp", tmp_path / "r.json"
    code, err = run(capsys, str(sample / "0000008.png"), "--motion", str(sample / "0000008_motion_fp16.npz"),
                    "--mask", str(sample / "0000008_mask.png"), "--size", "128x128", "--frames", "6",
                    "--strength", "3", "-o", str(out), "--report", str(report))  # fmt: skip
    assert code == 0, err
    doc = json.loads(report.read_text())
    assert (doc["frames"], doc["width"], doc["height"]) == (6, 128, 128)
    assert doc["moving_pixels"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["-o", "{tmp}/x.avi", "--arrow", "10,10,40,20"], "'.avi'"),
        (["-o", "{tmp}/x.mp4"], "nothing to animate"),
        (["-o", "{tmp}/x.mp4", "--arrow", "10,10,40,20", "--size", "12"], "--size '12'"),
        (["-o", "{tmp}/x.mp4", "--arrow", "10,10,40,20", "--size", "1x9000"], "between 2 and"),
        (["-o", "{tmp}/x.mp4", "--arrow", "10,10,4000,20"], "outside the image"),
        (["-o", "{tmp}/x.mp4", "--motion", "{tmp}/missing.npy"], "does not exist"),
        (["-o", "{tmp}/x.mp4", "--motion", "{tmp}/bad.npy"], "shape"),
        (["-o", "{tmp}/x.mp4", "--motion", "{tmp}/bad.npy", "--arrow", "10,10,40,20"], "shape"),
        (["-o", "{tmp}/x.mp4", "--motion", "{tmp}/bad.txt"], "'.txt'"),
        (["-o", "{tmp}/x.mp4", "--arrow", "10,10,40,20", "--save-motion", "{tmp}/f.txt"], "--save-motion"),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, capsys, args, message):
    np.save(tmp_path / "bad.npy", np.zeros((3, 4, 5), np.float32))
    (tmp_path / "bad.txt").write_text("x")
    before = set(tmp_path.iterdir())
    code, err = run(capsys, IMAGE, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2
    assert message in err and "Traceback" not in err
    assert set(tmp_path.iterdir()) == before


def test_arrows_and_motion_together_are_refused(tmp_path, capsys):
    np.save(tmp_path / "f.npy", np.zeros((10, 10, 2), np.float32))
    code, err = run(capsys, IMAGE, "--motion", str(tmp_path / "f.npy"), "--arrow", "10,10,40,20",
                    "-o", str(tmp_path / "x.mp4"))  # fmt: skip
    assert code == 2 and "not both" in err
    assert not (tmp_path / "x.mp4").exists()


def test_missing_image(tmp_path, capsys):
    code, err = run(capsys, str(tmp_path / "nope.jpg"), "--arrow", "1,1,5,5", "-o", str(tmp_path / "x.mp4"))
    assert code == 2 and "does not exist" in err


def test_diffusion_engine_missing_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "stillmotion.engines.diffusion", None)  # as if not installed
    out = tmp_path / "x.mp4"
    code, err = run(capsys, IMAGE, "--engine", "diffusion", "--arrow", "10,10,40,20", "-o", str(out))
    assert code == 2 and "diffusion engine not available" in err
    assert not out.exists()


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["animate", "--help"])
    text = capsys.readouterr().out
    options = (
        "--output", "--engine", "--arrow", "--arrows", "--mask", "--motion", "--frames", "--fps",
        "--strength", "--loop / --no-loop", "--size", "--save-motion", "--report", "--model", "--steps",
        "--seed", "--device", "--dtype", "--offload", "--refine / --no-refine", "--long-method", "--gamma",
        "--omega",
    )  # fmt: skip
    for option in options:
        assert option in text, option


def test_python_api_returns_frames_without_files(tmp_path, monkeypatch):
    import stillmotion

    monkeypatch.chdir(tmp_path)
    video = stillmotion.animate(IMAGE, arrows_file=ARROWS, frames=4, size=(96, 54))
    assert video.shape == (4, 54, 96, 3) and video.dtype == np.uint8
    frames = list(stillmotion.iter_frames(IMAGE, ["10,10,40,20"], frames=3, size=(64, 36), loop=False))
    assert len(frames) == 3
    tensor = stillmotion.animate(IMAGE, ["10,10,40,20"], frames=2, size=(64, 36), output_type="pt")
    assert tuple(tensor.shape) == (2, 3, 36, 64) and float(tensor.max()) <= 1.0
    assert list(tmp_path.iterdir()) == []


def test_a_flow_sequence_moves_each_step_along_its_own_field(tmp_path, capsys):
    import stillmotion

    # what `stillmotion flow VIDEO -o flows.npz` writes: key 'flow', (F, H, W, 2), here at half size
    seq = np.zeros((3, 45, 80, 2), np.float32)
    seq[0, ..., 0] = 0.5  # step 0: right (1 px/frame once resized to 160x90)
    seq[2, ..., 1] = 0.5  # step 1 does not move; step 2 (and later, repeated): down
    np.savez(tmp_path / "flows.npz", flow=seq, strength=np.float32(1.0), fps=np.float32(25))
    out, flows = tmp_path / "seq.gif", str(tmp_path / "flows.npz")
    code, err = run(capsys, IMAGE, "--motion", flows, "--frames", "5", "--size", "160x90", "--no-loop",
                    "-o", str(out))  # fmt: skip
    assert code == 0, err
    assert len(video_frames(out)) == 5
    # a loop needs one static field: said, nothing written
    code, err = run(capsys, IMAGE, "--motion", flows, "-o", str(tmp_path / "loop.gif"))
    assert code == 2 and "--no-loop" in err and not (tmp_path / "loop.gif").exists()
    frames = stillmotion.animate(IMAGE, motion=flows, size=(160, 90), frames=5, loop=False)
    inner = (slice(10, 80), slice(10, 150))
    assert not np.array_equal(frames[1][inner], frames[0][inner])  # step 0 moves
    assert np.array_equal(frames[2], frames[1])  # step 1 is still
    assert np.array_equal(frames[3][4:, :][inner], frames[2][3:-1, :][inner])  # step 2: one pixel down
