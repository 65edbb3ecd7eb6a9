"""The diffusion engine and `stillmotion animate --engine diffusion` on a tiny saved model."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("diffusers")

from stillmotion.engines import diffusion as engine  # noqa: E402
from stillmotion.errors import UserInputError  # noqa: E402
from stillmotion.inputs.scene import Scene  # noqa: E402


def scene() -> Scene:
    img = (np.random.default_rng(0).random((30, 44, 3)) * 255).astype(np.uint8)
    mask = np.zeros((30, 44), bool)
    mask[:, :20] = True
    return Scene(img, [], mask)


def test_engine_one_clip(tiny_dir):
    field = np.zeros((30, 44, 2), np.float32)
    field[:, :20, 0] = 1.0
    # the model's own (trained-mode) path: the sampler runs every step (warp-guided starts below the top)
    it, stats = engine.animate_diffusion(scene(), field, frames=5, steps=2, seed=3, model=str(tiny_dir),
                                         strength=2.0, device="cpu", dtype="fp32",
                                         control="trained")  # fmt: skip
    frames = list(it)
    assert len(frames) == 5 and frames[0].dtype == np.uint8
    w, h = stats["size"]
    assert frames[0].shape == (h, w, 3) and w % 4 == 0 and h % 4 == 0
    assert stats["steps"] == 2 and stats["unet_calls"] == 2 and stats["frame_evaluations"] == 2 * 2 * 5
    assert stats["device"] == "cpu" and stats["refined"] is False
    # strength scales the field, and M_s (eq. 8) is measured on the scaled field
    it2, stats2 = engine.animate_diffusion(scene(), field, frames=5, steps=2, seed=3, model=str(tiny_dir),
                                           strength=1.0, device="cpu", control="trained")  # fmt: skip
    assert stats["strength_ms"] == pytest.approx(2 * stats2["strength_ms"], rel=1e-4)
    again = list(engine.animate_diffusion(scene(), field, frames=5, steps=2, seed=3, model=str(tiny_dir),
                                          strength=2.0, device="cpu", control="trained")[0])  # fmt: skip
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))


def test_engine_errors(tiny_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(engine, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    with pytest.raises(UserInputError, match="--model"):
        engine.animate_diffusion(scene(), None, frames=3, steps=1)
    with pytest.raises(UserInputError, match="--dtype"):
        engine.animate_diffusion(scene(), None, frames=3, steps=1, model=str(tiny_dir), dtype="fp8")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(UserInputError, match="CUDA"):
            engine.animate_diffusion(scene(), None, frames=3, steps=1, model=str(tiny_dir), device="cuda")
    with pytest.raises(UserInputError, match="neither a local folder"):
        engine.animate_diffusion(scene(), None, frames=3, steps=1, model="someone/not-cached")


def test_cli_animate_diffusion(tiny_dir, tmp_path):
    from PIL import Image

    from stillmotion.cli import main

    Image.fromarray(scene().image).save(tmp_path / "in.png")
    out = tmp_path / "frames"
    report = tmp_path / "report.json"
    args = [
        "animate", str(tmp_path / "in.png"), "-o", str(out) + "/", "--engine", "diffusion", "--model",
        str(tiny_dir), "--arrow", "5,10,15,10", "--frames", "4", "--steps", "2", "--seed", "1",
    ]  # fmt: skip
    import inspect

    from stillmotion.cli.animate_cmd import animate

    if "report" in inspect.signature(animate.callback).parameters:
        args += ["--report", str(report)]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0
    assert len(list(out.glob("*.png"))) == 4
    if report.exists():
        data = json.loads(report.read_text())
        text = json.dumps(data)
        assert "unet_calls" in text and "steps" in text and "device" in text


@pytest.mark.parametrize("long", [False, True])
def test_on_step_reports_every_model_call_before_frames_come_out(tiny_dir, long):
    field = np.zeros((30, 44, 2), np.float32)
    field[:, :20, 0] = 1.0
    clip = engine.load_pipeline(str(tiny_dir), "cpu").unet.config.num_frames
    events: list = []
    # 5 steps with gamma 0.8: segment 1 takes 5 calls, each later segment the last one again.
    it, stats = engine.animate_diffusion(
        scene(), field, frames=2 * clip + 3 if long else 5, steps=5, seed=0, model=str(tiny_dir),
        device="cpu", on_step=lambda done, total: events.append((done, total)), control="trained",
    )  # fmt: skip
    first = next(it)
    assert first.dtype == np.uint8 and len(events) >= 5  # segment 1's calls were reported before
    list(it)
    total = stats["unet_calls"]
    assert total > 5 if long else total == 5
    assert events == [(i, total) for i in range(1, total + 1)]


def test_overlap_reaches_the_phased_sampler(tiny_dir):
    from stillmotion.sampling import LongOptions, expected_cost

    field = np.zeros((30, 44, 2), np.float32)
    field[:, :20, 0] = 1.0
    clip = engine.load_pipeline(str(tiny_dir), "cpu").unet.config.num_frames
    n = 3 * clip
    for overlap in (1, 3):
        it, stats = engine.animate_diffusion(scene(), field, frames=n, steps=5, seed=0, model=str(tiny_dir),
                                             device="cpu", overlap=overlap, control="trained")  # fmt: skip
        assert len(list(it)) == n and stats["overlap"] == overlap
        cost = expected_cost(LongOptions(overlap=overlap), n, clip, 5)
        assert stats["unet_calls"] == cost.denoiser_calls
        assert stats["frame_evaluations"] == 2 * cost.frame_passes  # guidance: both branches
    with pytest.raises(UserInputError, match="--overlap"):
        engine.animate_diffusion(scene(), field, frames=n, steps=1, model=str(tiny_dir), overlap=-1)


def test_an_overlap_that_cannot_apply_is_said(tiny_dir, caplog):
    field = np.zeros((30, 44, 2), np.float32)
    field[:, :20, 0] = 1.0
    clip = engine.load_pipeline(str(tiny_dir), "cpu").unet.config.num_frames
    kw = dict(frames=clip + 2, steps=1, seed=0, model=str(tiny_dir), device="cpu")
    with caplog.at_level("WARNING", logger="stillmotion.diffusion"):
        it, stats = engine.animate_diffusion(scene(), field, overlap=clip + 5, **kw)
        assert len(list(it)) == clip + 2 and stats["overlap"] == clip - 1  # what phased really shares
        list(engine.animate_diffusion(scene(), field, overlap=2, long_method="direct", **kw)[0])
    said = caplog.text
    assert f"at most {clip - 1} can be shared" in said and "phased only; ignored for direct" in said


def test_a_flow_sequence_steers_the_diffusion_engine(tiny_dir):
    seq = np.zeros((3, 30, 44, 2), np.float32)
    seq[0, :, :20, 0], seq[2, :, :20, 0] = 1.0, 2.0  # right, still, faster right
    clip = engine.load_pipeline(str(tiny_dir), "cpu").unet.config.num_frames
    for n in (3, clip + 2):  # the sequence cut to 2 steps; extended by its last field past 3
        it, stats = engine.animate_diffusion(scene(), seq, frames=n, steps=1, seed=0, model=str(tiny_dir),
                                             device="cpu")  # fmt: skip
        assert len(list(it)) == n and stats["refined"] is False  # T refines single arrow fields only
        assert stats["strength_ms"] > 0


def test_same_seed_same_first_clip_whatever_the_length(tiny_dir):
    # frames draw their noise per frame from the seed and the guidance ramp is per clip: a clip-long
    # video is the first clip of a longer phased one (bit for bit in one process), and the engine reports
    # the sampler's seams
    field = np.zeros((30, 44, 2), np.float32)
    field[:, :20, 0] = 1.0
    clip = engine.load_pipeline(str(tiny_dir), "cpu").unet.config.num_frames
    kw = dict(steps=2, seed=4, model=str(tiny_dir), device="cpu", decode_chunk_size=clip)
    short = list(engine.animate_diffusion(scene(), field, frames=clip, **kw)[0])
    it, stats = engine.animate_diffusion(scene(), field, frames=clip + 3, overlap=1, **kw)
    longer = list(it)
    assert len(longer) == clip + 3
    assert all(np.array_equal(a, b) for a, b in zip(short, longer[:clip], strict=True))
    assert stats["seams"] == [[clip, 1]]
