"""The ``motion`` and ``flow`` commands end to end, through ``stillmotion.cli.main``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stillmotion.cli import main
from stillmotion.inputs.scene import load_scene
from stillmotion.io.flo import read_flo
from stillmotion.motion.dense import dense_flow_from_arrows

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "stillmotion" / "assets" / "examples"


def run(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    return info.value.code, capsys.readouterr().err


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "in" / "photo.png"
    path.parent.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path)
    return path


def _outputs(tmp_path) -> list[str]:
    out = tmp_path / "out"
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def test_motion_on_bundled_example(tmp_path, capsys):
    png, flo = tmp_path / "out" / "field.png", tmp_path / "out" / "field.flo"
    code, err = run(
        ["motion", str(EXAMPLES / "waterfall.jpg"), "--arrows", str(EXAMPLES / "waterfall_arrows.json"),
         "-o", str(png), "--flo", str(flo)],
        capsys,
    )
    assert code == 0, err
    with Image.open(png) as im:
        assert im.size == (1280, 360)  # image and field side by side
    field = read_flo(flo)
    scene = load_scene(EXAMPLES / "waterfall.jpg", arrows_file=EXAMPLES / "waterfall_arrows.json")
    expected = dense_flow_from_arrows(scene.arrows, scene.width, scene.height, mask=scene.mask)
    np.testing.assert_array_equal(field, expected)
    assert not field[~scene.mask].any()
    assert _outputs(tmp_path) == ["field.flo", "field.png"]  # no temporary files left


def test_motion_options(image, tmp_path, capsys):
    flo = tmp_path / "out" / "f.flo"
    code, err = run(["motion", str(image), "--arrow", "10,10,34,10", "--strength", "2", "--sigma", "5",
                     "--threshold", "0.2", "--layout", "overlay", "-o", str(tmp_path / "out" / "f.jpg"),
                     "--flo", str(flo)], capsys)
    assert code == 0, err
    field = read_flo(flo)
    assert field[10, 10] == pytest.approx([2.0, 0.0], rel=1e-5)  # 24 px in 24 steps, times 2
    assert not field[50, 70].any()  # sigma 5: zero far away
    with Image.open(tmp_path / "out" / "f.jpg") as im:
        assert im.size == (80, 60)  # overlay: one panel


def _json(tmp_path, name, doc) -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        (lambda t: ["--arrow", "10,10,200,10"], "lies outside the image"),
        (lambda t: ["--arrow", "10,10,10,10"], "zero length"),
        (lambda t: ["--arrow", "nan,10,20,10"], "non-finite"),
        (lambda t: ["--arrow", "10,10,20"], "4 or 5 numbers"),
        (lambda t: ["--arrows", str(_json(t, "one.json", {"arrows": [{"points": [[5, 5]], "name": "dot"}]}))],
         "arrow 'dot' has a single point"),
        (lambda t: ["--arrows", str(_json(t, "bad.json", '{"arrows": [[1, 2'))], "not valid JSON"),
        (lambda t: ["--arrows", str(t / "missing.json")], "cannot read arrows file"),
        (lambda t: ["--arrow", "10,10,20,10", "--mask", str(_json(t, "mask.png", "not an image"))],
         "cannot read mask"),
        (lambda t: ["--arrow", "10,10,20,10", "--mask", str(t / "nomask.png")], "mask .* does not exist"),
        (lambda t: [], "no arrows given"),
        (lambda t: ["--arrow", "10,10,20,10", "--strength", "-1"], "--strength"),
        (lambda t: ["--arrow", "10,10,20,10", "--sigma", "0"], "--sigma"),
        (lambda t: ["--arrow", "10,10,20,10", "--threshold", "1"], "--threshold"),
    ],
)
def test_motion_errors_write_nothing(image, tmp_path, capsys, case, message):
    args = ["motion", str(image), *case(tmp_path), "-o", str(tmp_path / "out" / "f.png"),
            "--flo", str(tmp_path / "out" / "f.flo")]
    code, err = run(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err  # one clear line, no traceback
    assert re.search(message, lines[0]), lines[0]
    assert _outputs(tmp_path) == []


def test_motion_wrong_output_names(image, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(["motion", str(image), "--arrow", "1,1,9,9", "-o", str(out / "f.flo")], capsys)
    assert code == 2 and "-o" in err
    code, err = run(["motion", str(image), "--arrow", "1,1,9,9", "-o", str(tmp_path / "out" / "f.png"),
                     "--flo", str(tmp_path / "out" / "f.npy")], capsys)
    assert code == 2 and "--flo" in err
    assert _outputs(tmp_path) == []


@pytest.mark.parametrize("command", ["motion", "flow"])
def test_help_explains_every_option(command, capsys):
    import importlib

    from stillmotion.cli import COMMANDS

    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    module, attr, _ = COMMANDS[command]
    cmd = getattr(importlib.import_module(module), attr)
    for param in cmd.params:
        if param.param_type_name == "option":
            assert param.help and len(param.help) > 15, f"{command} {param.opts} lacks help"
            assert param.opts[-1] in text


def _frames(folder: Path, n: int = 4, shift: int = 2) -> list[Path]:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((96 + 4 * n, 72), Image.BICUBIC))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        p = folder / f"f{k}.png"
        Image.fromarray(big[:, 40 - shift * k : 40 - shift * k + 64]).save(p)  # content moves +shift px/frame
        paths.append(p)
    return paths


def test_flow_two_frames(tmp_path, capsys):
    a, b = _frames(tmp_path / "frames", 2)[:2]
    out = tmp_path / "out" / "ab.flo"
    viz = tmp_path / "out" / "ab.png"
    code, err = run(["flow", str(a), str(b), "-o", str(out), "--viz", str(viz)], capsys)
    assert code == 0, err
    flow = read_flo(out)
    assert flow.shape == (72, 64, 2)
    assert abs(float(np.median(flow[..., 0])) - 2.0) < 0.3
    from stillmotion.motion.flow import estimate_flow

    frames = [np.asarray(Image.open(p).convert("RGB")) for p in (a, b)]
    np.testing.assert_array_equal(flow, estimate_flow(*frames))
    assert (tmp_path / "out" / "ab.png").exists()


def test_flow_folder_to_npz_with_viz(tmp_path, capsys):
    _frames(tmp_path / "frames", 5)
    out, viz = tmp_path / "out" / "seq.npz", tmp_path / "out" / "seq.mp4"
    args = ["flow", str(tmp_path / "frames"), "-o", str(out), "--viz", str(viz), "--fps", "10"]
    code, err = run(args, capsys)
    assert code == 0, err
    with np.load(out) as d:
        assert d["flow"].shape == (4, 72, 64, 2) and d["flow"].dtype == np.float16
        assert float(d["fps"]) == 10.0
        from stillmotion.motion.strength import motion_strength

        assert float(d["strength"]) == pytest.approx(motion_strength(d["flow"].astype(np.float32)), rel=1e-3)
        assert abs(float(np.median(d["flow"][..., 0])) - 2.0) < 0.3
    from stillmotion.io.video_reader import open_frames

    src = open_frames(viz)
    assert src.size == (128, 72) and len(list(src)) == 4  # frame beside its flow, one per pair


def test_flow_stride_and_max_frames(tmp_path, capsys):
    _frames(tmp_path / "frames", 6)
    out = tmp_path / "out" / "seq.npz"
    code, err = run(["flow", str(tmp_path / "frames"), "-o", str(out), "--stride", "2", "--max-frames", "3",
                     "--dtype", "float32"], capsys)
    assert code == 0, err
    with np.load(out) as d:
        assert d["flow"].shape == (2, 72, 64, 2) and d["flow"].dtype == np.float32
        assert abs(float(np.median(d["flow"][..., 0])) - 4.0) < 0.5  # frames 2 apart
        assert float(d["fps"]) == 12.5


def test_flow_raft_with_local_weights(tmp_path, capsys):
    import torch

    from stillmotion.motion.raft import RAFT, RAFT_SMALL

    weights = tmp_path / "raft_small.pth"
    torch.save(RAFT(RAFT_SMALL).state_dict(), weights)
    a, b = _frames(tmp_path / "frames", 2)[:2]
    out = tmp_path / "out" / "r.flo"
    # Tiny input: one thread is faster, and immune to OpenMP spin-waits when the cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = ["flow", str(a), str(b), "-o", str(out), "--method", "raft", "--weights", str(weights)]
        code, err = run([*args, "--iterations", "2", "--device", "cpu"], capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    assert read_flo(out).shape == (72, 64, 2)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "raft"], "needs --weights"),
        (["--method", "raft", "--weights", "{t}/absent.pth"], "weights file .*absent.pth does not exist"),
        (["--weights", "{t}/absent.pth"], "only used with --method raft"),
        (["--viz", "{t}/out/v.avi"], "unsupported extension"),
    ],
)
def test_flow_errors_write_nothing(tmp_path, capsys, extra, message):
    _frames(tmp_path / "frames", 3)
    args = ["flow", str(tmp_path / "frames"), "-o", str(tmp_path / "out" / "x.npz")]
    args += [e.format(t=tmp_path) for e in extra]
    code, err = run(args, capsys)
    assert code == 2
    assert re.search(message, err), err
    assert _outputs(tmp_path) == []


def test_flow_input_errors(tmp_path, capsys):
    a, b, c = _frames(tmp_path / "frames", 3)
    out = str(tmp_path / "out" / "x.npz")
    for args, message in [
        ([str(a), "-o", out], "has 1 frame"),
        ([str(a), str(b), "-o", out], "written as .flo"),
        ([str(tmp_path / "nothing.mp4"), "-o", out], "does not exist"),
        ([str(a), str(tmp_path / "frames"), "-o", out], "must both be image files"),
        ([str(tmp_path / "frames"), "-o", str(tmp_path / "out" / "x.flo")], "written as .npz"),
    ]:
        code, err = run(["flow", *args], capsys)
        assert code == 2 and message in err, (args, err)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "small.png")
    args = ["flow", str(a), str(tmp_path / "small.png"), "-o", str(tmp_path / "out" / "x.flo")]
    code, err = run(args, capsys)
    assert code == 2 and "one size" in err
    assert _outputs(tmp_path) == []
