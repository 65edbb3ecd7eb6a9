"""Issue 15 on the command line: bad inputs and outputs give one `Error:` line (exit 2), write nothing,
and never delete or overwrite what the user did not name as an output. Each test is the issue's
reproduction, on tiny files under tmp_path."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stillmotion.cli import main

REPO = Path(__file__).resolve().parents[1]
ARROW = ("--arrow", "10,10,30,12")


def run(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    return info.value.code, capsys.readouterr().err


def one_error(code: int, err: str, *needles: str) -> str:
    """Exit 2 and exactly one `Error:` line (warnings aside) holding every needle."""
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("Warning:")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def photo(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)).save(path)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (1-bit grey) with almost no data: what a
    decompression bomb looks like to a reader before it decodes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    photo(tmp_path / "p.png")
    photo(tmp_path / "q.png", seed=1)
    return tmp_path


# ------------------------------------------------------------------------------------ data loss


def test_existing_folder_output_that_is_not_ours_is_kept(work, capsys):
    d = work / "d"
    photo(d / "small.png")
    (d / "keep.txt").write_text("mine")
    before = snapshot(d)
    code, err = run(capsys, "animate", "d/small.png", *ARROW, "--frames", "3", "-o", "d")
    one_error(code, err, "-o d", "holds the input")
    assert snapshot(d) == before
    # The input elsewhere: still refused, naming what is in the folder and how to force it.
    code, err = run(capsys, "animate", "p.png", *ARROW, "--frames", "3", "-o", "d")
    one_error(code, err, "keep.txt", "--overwrite")
    assert snapshot(d) == before


def test_overwrite_replaces_a_foreign_folder_and_our_frames_are_replaced_without_it(work, capsys):
    frames = work / "frames"
    code, err = run(capsys, "animate", "p.png", *ARROW, "--frames", "3", "-o", "frames/")
    assert code == 0, err
    code, err = run(capsys, "animate", "p.png", *ARROW, "--frames", "2", "-o", "frames/")
    assert code == 0, err  # a folder of nothing but our frames is ours
    assert sorted(p.name for p in frames.iterdir()) == ["frame_00000.png", "frame_00001.png"]
    (frames / "notes.txt").write_text("x")
    code, err = run(capsys, "animate", "p.png", *ARROW, "--frames", "2", "-o", "frames/")
    one_error(code, err, "notes.txt")
    code, err = run(capsys, "animate", "p.png", *ARROW, "--frames", "2", "-o", "frames/", "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in frames.iterdir()) == ["frame_00000.png", "frame_00001.png"]


def test_eval_output_equal_to_the_input_folder_keeps_the_videos(work, capsys):
    from stillmotion.io.video_writer import write_video

    v = work / "v"
    v.mkdir()
    write_video(v / "clip.mp4", [np.full((32, 32, 3), i * 20, np.uint8) for i in range(4)], fps=8)
    before = snapshot(v)
    code, err = run(capsys, "eval", "v/", "-o", "v/", "--methods", "warp", "--frames", "3")
    one_error(code, err, "-o v", "is also the input")
    assert snapshot(v) == before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["motion", "p.png", *ARROW, "-o", "p.png"], "is also the input IMAGE"),
        (["animate", "p.png", *ARROW, "--frames", "2", "-o", "x.mp4", "--save-motion", "p.png"],
         "is also the input IMAGE"),
        (["animate", "p.png", *ARROW, "--frames", "2", "-o", "x.mp4", "--report", "p.png"], ".json"),
        (["animate", "p.png", *ARROW, "--frames", "2", "-o", "o.mp4", "--report", "o.mp4"], ".json"),
        (["flow", "p.png", "q.png", "-o", "f.flo", "--viz", "p.png"], "is also the input"),
        (["motion", "./sub/../p.png", *ARROW, "-o", "p.png"], "is also the input"),
        (["motion", "link.png", *ARROW, "-o", "p.png"], "is also the input"),
        (["animate", "p.png", *ARROW, "--frames", "2", "-o", "fr/", "--save-motion", "fr/field.png"],
         "inside the output folder"),
        (["animate", "p.png", "--arrows", "a.json", "--frames", "2", "-o", "x.mp4", "--save-motion", "m.png"],
         "is also the input mask of --arrows a.json"),
        (["motion", "p.png", "--arrows", "a.json", "-o", "m.png"], "is also the input mask of --arrows"),
    ],
)  # fmt: skip
def test_an_output_that_is_an_input_or_another_output_is_refused(work, capsys, args, needle):
    (work / "sub").mkdir()
    (work / "link.png").symlink_to(work / "p.png")
    Image.fromarray(np.full((48, 64), 255, np.uint8)).save(work / "m.png")
    (work / "a.json").write_text('{"mask": "m.png", "arrows": [{"points": [[10, 10], [30, 12]]}]}')
    before = snapshot(work)
    code, err = run(capsys, *args)
    one_error(code, err, needle)
    assert snapshot(work) == before


def test_flow_viz_equal_to_the_input_video_is_refused(work, capsys):
    from stillmotion.io.video_writer import write_video

    write_video(work / "clip.mp4", [np.full((24, 24, 3), i * 30, np.uint8) for i in range(3)], fps=8)
    before = snapshot(work)
    code, err = run(capsys, "flow", "clip.mp4", "-o", "c.npz", "--viz", "clip.mp4")
    one_error(code, err, "--viz clip.mp4", "is also the input")
    assert snapshot(work) == before


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    from stillmotion.inputs.image import load_image
    from stillmotion.inputs.mask import load_mask
    from stillmotion.io.video_reader import read_frames

    grey = np.full((20, 30), 67 * 257, np.uint16)
    grey[:, 15:] = 200 * 257
    Image.fromarray(grey).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit picture
    image = load_image(tmp_path / "g16.png")
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    assert image[:, :15].mean() == pytest.approx(67, abs=0.5)  # was 255 (clipped to white)
    assert image[:, 15:].mean() == pytest.approx(200, abs=0.5)
    mask = load_mask(tmp_path / "g16.png", 30, 20)
    assert not mask[:, :15].any() and mask[:, 15:].all()
    Image.fromarray(grey).save(tmp_path / "g16b.png")
    frames = read_frames([tmp_path / "g16.png", tmp_path / "g16b.png"])
    assert frames[0, :, :15].mean() == pytest.approx(67, abs=0.5)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["motion", "p.png", "--arrow", "10,10,30,12,1e308", "-o", "m.png", "--flo", "m.flo"], "10000"),
        (["animate", "p.png", "--arrow", "10,10,30,12,1e308", "--frames", "2", "-o", "o.mp4"], "10000"),
        (["animate", "p.png", "--motion", "huge.npy", "--frames", "2", "-o", "o.mp4"], "limit is 10000"),
        (["animate", "p.png", "--motion", "huge.flo", "--frames", "2", "-o", "o.mp4"], "limit is 10000"),
        (["animate", "p.png", "--motion", "nan.flo", "--frames", "2", "-o", "o.mp4"], "NaN"),
        (["animate", "p.png", "--motion", "nan.npy", "--frames", "2", "-o", "o.mp4"], "NaN"),
    ],
)
def test_values_that_would_overflow_are_refused_with_the_limit(work, capsys, args, needle):
    from stillmotion.io.flo import write_flo

    np.save(work / "huge.npy", np.full((48, 64, 2), 1e30, np.float32))
    np.save(work / "nan.npy", np.full((48, 64, 2), np.nan, np.float32))
    write_flo(work / "huge.flo", np.full((48, 64, 2), 1e8, np.float32))
    write_flo(work / "nan.flo", np.full((48, 64, 2), np.nan, np.float32))
    before = snapshot(work)
    code, err = run(capsys, *args)
    one_error(code, err, needle)
    assert snapshot(work) == before


def test_strength_1e300_is_refused_with_the_limit(work, capsys):
    code, err = run(capsys, "animate", "p.png", *ARROW, "--strength", "1e300", "--frames", "2", "-o", "o.mp4")
    assert code == 2 and "Error: Invalid value for '--strength'" in err and "10000" in err, err
    assert not (work / "o.mp4").exists()


@pytest.mark.parametrize("option", ["--omega", "--gamma", "--strength", "--fps"])
def test_nan_options_are_refused(work, capsys, option):
    code, err = run(capsys, "animate", "p.png", *ARROW, option, "nan", "--frames", "2", "-o", "o.mp4")
    assert code == 2 and "not a finite number" in err, err
    assert not (work / "o.mp4").exists()


# ---------------------------------------------------------------------- outputs checked first


@pytest.mark.parametrize(
    "output, needle",
    [
        ("/proc/x/o.mp4", "cannot write in folder /proc"),
        ("p.png/o.mp4", "is a file, not a folder"),
        ("isdir.mp4", "is an existing folder"),
        (".", "current folder"),
        ("sub/..", "current folder"),
    ],
)
def test_bad_output_locations_are_refused_before_any_work(work, capsys, output, needle):
    (work / "isdir.mp4").mkdir()
    before = set(os.listdir(work))
    code, err = run(capsys, "animate", "p.png", *ARROW, "--frames", "2", "-o", output)
    one_error(code, err, needle)
    assert set(os.listdir(work)) == before  # no .o.*.tmp.mp4, no ..*.tmp/ folder
    assert os.listdir(work / "isdir.mp4") == []


def test_report_that_is_a_folder_is_refused(work, capsys):
    (work / "r.json").mkdir()
    code, err = run(capsys, "animate", "p.png", *ARROW, "--frames", "2", "-o", "o.mp4", "--report", "r.json")
    one_error(code, err, "--report r.json is an existing folder")
    code, err = run(capsys, "animate", "p.png", *ARROW, "--frames", "2", "-o", "o.mp4", "--report", "d")
    one_error(code, err, "--report d", ".json")
    assert sorted(os.listdir(work)) == ["p.png", "q.png", "r.json"]


def test_outputs_appear_together_or_not_at_all(work, monkeypatch):
    import stillmotion.api as api
    from stillmotion.errors import UserInputError

    def broken(*args, **kwargs):
        raise UserInputError("could not write the motion picture (simulated)")

    monkeypatch.setattr(api, "_write_field_picture", broken)
    with pytest.raises(UserInputError, match="simulated"):
        api.animate_to_file(work / "p.png", work / "o.mp4", ["10,10,30,12"], frames=3,
                            save_motion=work / "f.png", report=work / "r.json")  # fmt: skip
    assert sorted(os.listdir(work)) == ["p.png", "q.png"]  # no video left behind, no temporary


def test_sigterm_mid_render_cleans_up_like_sigint(work):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "stillmotion.cli", "animate", "p.png", *ARROW, "--frames", "100000",
            "--no-loop", "-o", "long.mp4"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not any(n.startswith(".long.") for n in os.listdir(work)):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the render never started"
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read().decode()
    assert code == 143, err
    assert "Terminated." in err and "Traceback" not in err
    assert sorted(os.listdir(work)) == ["p.png", "q.png"]  # the temporary video is gone


# ------------------------------------------------------------------ one line, not a traceback


@pytest.mark.parametrize("role", ["image", "mask", "flow frame", "frame folder"])
def test_decompression_bombs_are_one_error_line(work, capsys, role):
    bomb = png_header_only(work / "bomb.png", 30000, 30000)
    if role == "image":
        args = ["animate", str(bomb), *ARROW, "--frames", "2", "-o", "o.mp4"]
    elif role == "mask":
        args = ["animate", "p.png", "--mask", str(bomb), *ARROW, "--frames", "2", "-o", "o.mp4"]
    elif role == "flow frame":
        args = ["flow", "p.png", str(bomb), "-o", "f.flo"]
    else:
        (work / "frames").mkdir()
        os.replace(bomb, work / "frames" / "f0.png")
        photo(work / "frames" / "f1.png")
        args = ["flow", "frames", "-o", "f.npz"]
    code, err = run(capsys, *args)
    one_error(code, err, "too large to decode safely", "900000000 pixels")
    assert not any(n.startswith(("o.", "f.", ".o", ".f")) for n in os.listdir(work))


@pytest.mark.parametrize(
    "text, needle",
    [
        ('{"version": 1, "image_size": [0.5, 0.5], "arrows": [{"points": [[1, 1], [5, 5]]}]}', "image_size"),
        ('{"version": 1, "image_size": [Infinity, 100], "arrows": []}', "Infinity"),
        ('{"arrows": ' + "[" * 100000 + "]" * 100000 + "}", "nested too deeply"),
        ('{"arrows": [{"points": [[1, 1], [5, 5]], "strength": ' + "9" * 5000 + "}]}", "5000 digits"),
        ('{"arrows": [{"points": [[1, 1], [5, 5]], "strength": 1e999}]}', "too large"),
        (bytes(range(256)) * 10, "not a text (UTF-8) JSON file"),
    ],
)
def test_arrows_json_edge_cases_are_one_error_line(work, capsys, text, needle):
    path = work / "a.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, err = run(capsys, "animate", "p.png", "--arrows", "a.json", "--frames", "2", "-o", "o.mp4")
    one_error(code, err, "a.json", needle)
    assert not (work / "o.mp4").exists()


def test_gif_faster_than_100_fps_is_refused(work, capsys):
    code, err = run(capsys, "animate", "p.png", *ARROW, "--frames", "2", "--fps", "150", "-o", "o.gif")
    one_error(code, err, "fps 150", "100")
    assert sorted(os.listdir(work)) == ["p.png", "q.png"]
    code, err = run(capsys, "animate", "p.png", *ARROW, "--frames", "2", "--fps", "100", "-o", "o.gif")
    assert code == 0, err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["s1.png", "s2.png", "-o", "s.flo"], "10x8"),
        (["p.png", "q.png", "-o", "s.flo", "--resize", "8"], "8x6"),
    ],
)
def test_flow_on_tiny_frames_is_one_error_line(work, capsys, args, needle):
    photo(work / "s1.png", 10, 8)
    photo(work / "s2.png", 10, 8, seed=3)
    code, err = run(capsys, "flow", *args)
    one_error(code, err, needle, "at least 12 px")
    assert not (work / "s.flo").exists()


def test_diffusion_engine_on_a_2x2_photo(work, capsys):
    from stillmotion.engines.diffusion import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "model_index.json").is_file():
        pytest.skip("the bundled diffusion model is not installed")
    photo(work / "tiny.png", 2, 2)
    code, err = run(capsys, "animate", "tiny.png", "--engine", "diffusion", "--frames", "2", "--steps", "1",
                    "-o", "t.mp4")  # fmt: skip
    assert "Traceback" not in err
    if code != 0:  # a refusal is fine, as one line
        one_error(code, err, "tiny.png")
    else:
        assert (work / "t.mp4").stat().st_size > 0


def test_prepare_refuses_a_bad_cache(work, capsys):
    photo(work / "photos" / "a.png")
    (work / "c").mkdir()
    (work / "c" / "index.json").write_text("[]")
    code, err = run(capsys, "prepare", "--synthetic", str(work / "photos"), "-o", "c")
    one_error(code, err, "index.json", "not a clip-cache index")
    (work / "afile").write_text("x")
    code, err = run(capsys, "prepare", "--synthetic", str(work / "photos"), "-o", "afile")
    one_error(code, err, "-o afile", "existing file")
    assert (work / "afile").read_text() == "x"


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_prepare_shard_mb_must_be_positive(work, capsys, value):
    (work / "photos").mkdir()
    photo(work / "photos" / "a.png")
    code, err = run(capsys, "prepare", "--synthetic", "photos", "-o", "c", "--shard-mb", value,
                    "--frames", "3", "--size", "16")  # fmt: skip
    one_error(code, err, "--shard-mb")
    assert not (work / "c").exists()


@pytest.mark.parametrize("command", ["animate", "motion", "prepare"])
def test_empty_size_is_refused(work, capsys, command):
    if command == "prepare":
        photo(work / "photos" / "a.png")
        args = ["prepare", "--synthetic", "photos", "-o", "c", "--size", ""]
    else:
        extra = ["--frames", "2", "-o", "o.mp4"] if command == "animate" else ["-o", "o.png"]
        args = [command, "p.png", *ARROW, "--size", "", *extra]
    code, err = run(capsys, *args)
    one_error(code, err, "--size", "''")
    expected = ["p.png", "q.png"] + (["photos"] if command == "prepare" else [])
    assert sorted(os.listdir(work)) == sorted(expected)


def test_all_black_mask_is_an_error_not_a_still_video(work, capsys):
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(work / "black.png")
    code, err = run(capsys, "animate", "p.png", "--mask", "black.png", *ARROW, "--frames", "2", "-o", "o.mp4")
    one_error(code, err, "black.png", "all black")
    assert not (work / "o.mp4").exists()


def test_truncated_mp4_is_used_with_a_warning(work, capsys):
    from stillmotion.io.video_writer import write_video

    rng = np.random.default_rng(0)
    write_video(work / "v.mp4", [rng.integers(0, 255, (32, 32, 3), np.uint8) for _ in range(20)], fps=10)
    data = (work / "v.mp4").read_bytes()
    (work / "cut.mp4").write_bytes(data[: len(data) // 2])
    code, err = run(capsys, "flow", "cut.mp4", "-o", "f.npz")
    assert code == 0, err
    assert "Warning: video cut.mp4 ended after" in err and "of its 20 frames" in err
    code, err = run(capsys, "flow", "v.mp4", "-o", "g.npz")
    assert code == 0 and "Warning" not in err, err


def test_huge_photo_is_refused_before_decoding_with_the_limit_and_size_named(work):
    # The header of a 12000x8000 photo is all the check reads; memory stays at the import's.
    png_header_only(work / "huge.png", 12000, 8000)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    # Both commands in one fresh process, so that its peak memory is theirs alone.
    script = (
        "import resource, sys\nfrom stillmotion.cli import main\n"
        "for args in (['motion', 'huge.png', '--arrow', '10,10,30,12', '-o', 'm.png'],\n"
        "             ['animate', 'huge.png', '--arrow', '10,10,30,12', '--frames', '2', '-o', 'a.mp4']):\n"
        "    try:\n        main(args)\n"
        "    except SystemExit as e:\n        print('exit', e.code, file=sys.stderr)\n"
        # VmHWM: this process's own peak; ru_maxrss would carry over the forking pytest process's size
        "hwm = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')]\n"
        "peak = hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print('maxrss_kb', peak, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    err = done.stderr
    assert err.count("exit 2") == 2, err
    assert err.count("12000x8000 (96 MP)") == 2 and "stillmotion motion works on at most 40 MP" in err, err
    assert "the warp engine works on at most 40 MP" in err and "--size" in err, err
    rss_mb = int(err.split("maxrss_kb")[1]) / 1024
    assert rss_mb < 1500, rss_mb  # the decoded photo alone would be 288 MB; the old runs took 6-10 GB
    assert sorted(os.listdir(work)) == ["huge.png", "p.png", "q.png"]


# --------------------------------------------------------------------------- clearer messages


def test_text_file_named_npz_is_called_what_it_is(work, capsys):
    (work / "text.npz").write_text("hello world\n")
    code, err = run(capsys, "animate", "p.png", "--motion", "text.npz", "--frames", "2", "-o", "o.mp4")
    line = one_error(code, err, "text.npz", "not a NumPy .npz")
    assert "pickle" not in line


def test_bad_raft_weights_are_named(work, capsys):
    (work / "bad.pth").write_text("hello this is text\n")
    args = ["flow", "p.png", "q.png", "-o", "f.flo", "--method", "raft", "--weights", "bad.pth"]
    code, err = run(capsys, *args)
    line = one_error(code, err, "bad.pth", "not a PyTorch")
    assert not line.endswith(": 101")


def test_train_config_messages(work, capsys):
    (work / "cfgdir").mkdir()
    code, err = run(capsys, "train", "diffusion", "cfgdir")
    one_error(code, err, "cfgdir is a folder")
    code, err = run(capsys, "train", "diffusion", "lr=nan", "output_dir=out")
    line = one_error(code, err, "'lr'", "finite")
    assert "min_lr" not in line
    assert not (work / "out").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["diffusion", str(REPO / "configs" / "diffusion_tiny.yaml"), "data=empty", "max_steps=1"],
        ["refiner", "prepared=empty", "max_steps=1"],
    ],
)
def test_train_leaves_no_config_behind_on_a_data_error(work, capsys, args):
    (work / "empty").mkdir()
    code, err = run(capsys, "train", *args, "output_dir=out")
    # (the model libraries may log a line of their own on stderr)
    errors = [ln for ln in err.splitlines() if ln.startswith("Error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "empty is not a clip cache" in errors[0]
    assert not (work / "out" / "config.yaml").exists()


def test_demo_refuses_a_file_as_its_folder(work, capsys):
    (work / "out").write_text("mine")
    code, err = run(capsys, "demo", "-o", "out", "--engine", "warp", "--frames", "2")
    one_error(code, err, "-o out", "existing file")
    assert (work / "out").read_text() == "mine"


def test_eval_writes_its_marker_so_a_rerun_may_replace_it(tmp_path):
    from stillmotion.io.atomic import atomic_path
    from stillmotion.io.outputs import OUTPUT_MARKER, check_folder_replaceable, folder_is_ours

    out = tmp_path / "report"
    with atomic_path(out, directory=True, marker=True) as tmp:
        (tmp / "table.md").write_text("|a|")
    assert (out / OUTPUT_MARKER).is_file() and folder_is_ours(out)
    check_folder_replaceable(out)  # no error: ours
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "table.md").write_text("|b|")
    assert not folder_is_ours(tmp_path / "theirs")
