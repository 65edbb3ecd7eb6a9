"""Control modes of the diffusion engine (auto, trained, warp-guided, none) on tiny pipelines, untrained
motion modules skipped, and the arrows really steering the shipped models (bundled and plain)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from stillmotion.diffusion.pipeline import StillMotionPipeline  # noqa: E402
from stillmotion.diffusion.tiny import tiny_components  # noqa: E402
from stillmotion.engines import diffusion as engine  # noqa: E402
from stillmotion.errors import UserInputError  # noqa: E402
from stillmotion.inputs.arrows import Arrow  # noqa: E402
from stillmotion.inputs.scene import Scene  # noqa: E402


def scene() -> tuple[Scene, np.ndarray]:
    img = (np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8)
    mask = np.zeros((32, 48), bool)
    mask[:, :24] = True
    field = np.zeros((32, 48, 2), np.float32)
    field[:, :24, 0] = 1.0
    return Scene(img, [], mask), field


def run(tiny_dir, field, **kw):
    sc, _ = scene()
    it, stats = engine.animate_diffusion(sc, field, frames=4, steps=4, seed=1, model=str(tiny_dir),
                                         device="cpu", size=(48, 32), **kw)  # fmt: skip
    return np.stack(list(it)), stats


def test_untrained_motion_modules_are_skipped_entirely():
    pipe = StillMotionPipeline(**tiny_components(0))
    calls = []
    pipe.motion_encoder.register_forward_hook(lambda *a: calls.append(1))
    assert not pipe.motion_modules_trained
    _, field = scene()
    image = scene()[0].image
    prepared = pipe.prepare(image, field, num_frames=4, width=48, height=32)
    den = prepared.denoiser
    den.set_schedule(2)
    den(torch.zeros(den.latent_shape(4)), den.sigmas[0])
    assert den.motion_adapter is None and den.flows is None and den.strength is None and not calls
    assert pipe.motion_adapter._handles == []  # no hook runs inside the UNet's forward
    assert prepared.strength > 0 and prepared.motion_trained is False
    with torch.no_grad():  # trained (non-zero) modules run as before
        pipe.motion_adapter.strength_proj.weight.fill_(0.1)
    assert pipe.motion_modules_trained
    den = pipe.prepare(image, field, num_frames=4, width=48, height=32).denoiser
    den.set_schedule(2)
    den(torch.zeros(den.latent_shape(4)), den.sigmas[0])
    assert den.flows is not None and calls and pipe.motion_adapter._handles


def test_modes_on_a_model_without_trained_motion(tiny_dir, caplog):
    _, field = scene()
    sc, _ = scene()
    with caplog.at_level("WARNING", logger="stillmotion.diffusion"):
        guided, stats = run(tiny_dir, field)  # auto -> warp-guided (motion modules untrained)
    assert stats["control"] == "warp-guided" and "untrained" in stats["motion_modules"]
    assert stats["steps_run"] < stats["steps"] and stats["reference"] == "forward"
    assert not caplog.text  # nothing to warn about
    # still regions stay exactly the photo's
    assert np.array_equal(guided[:, :, 24 + 8 :], np.repeat(sc.image[None, :, 24 + 8 :], 4, 0))
    with caplog.at_level("WARNING", logger="stillmotion.diffusion"):
        trained, stats_t = run(tiny_dir, field, control="trained")
    assert stats_t["control"] == "trained"
    assert "--control trained" in caplog.text and "untrained" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="stillmotion.diffusion"):
        none, stats_n = run(tiny_dir, field, control="none")
    assert "ignored" in caplog.text and stats_n["control"] == "none"
    plain, _ = run(tiny_dir, None, control="none")
    assert np.array_equal(none, plain)  # arrows ignored: the plain image-to-video frames
    assert np.array_equal(trained, plain)  # untrained modules: the arrows change nothing
    assert not np.array_equal(guided, plain)
    with pytest.raises(UserInputError, match="--control"):
        run(tiny_dir, field, control="steer")
    with pytest.raises(UserInputError, match="--follow"):
        run(tiny_dir, field, follow=2.0)


def test_warp_guided_loop_and_long_videos(tiny_dir):
    _, field = scene()
    sc, _ = scene()
    clip = engine.load_pipeline(str(tiny_dir), "cpu").unet.config.num_frames
    n = 2 * clip + 3
    for method in ("phased", "direct", "freenoise", "gen-l-video"):
        events: list = []
        it, stats = engine.animate_diffusion(sc, field, frames=n, steps=3, seed=0, model=str(tiny_dir),
                                             device="cpu", size=(48, 32), long_method=method, loop=True,
                                             follow=1.0, on_step=lambda d, t, e=events: e.append((d, t)))
        video = np.stack(list(it))
        assert len(video) == n and stats["reference"] == "loop" and stats["long_method"] == method
        assert events[-1] == (stats["unet_calls"], stats["unet_calls"])  # progress counts the calls run
        assert np.array_equal(video[:, :, 32:], np.repeat(sc.image[None, :, 32:], n, 0))
        if method == "phased":  # warp-guided joins cross-fade five frames unless --overlap says otherwise
            assert stats["overlap"] == min(5, clip - 1)
    # a model continuing its own motion (no motion input: the own carry) cross-fades five as well
    for control, overlap, want in (("warp-guided", 1, 1), ("none", None, min(5, clip - 1)), ("none", 1, 1)):
        it, stats = engine.animate_diffusion(sc, field, frames=n, steps=2, seed=0, model=str(tiny_dir),
                                             device="cpu", size=(48, 32), control=control, overlap=overlap)
        assert len(list(it)) == n and stats["overlap"] == want, (control, overlap)


def _photo_with_one_arrow(size: tuple[int, int] = (96, 64)):
    """A crop of the example photo (a held-out waterfall) with one rightward arrow over its textured
    middle; the rest of the crop is still."""
    from stillmotion.inputs.image import load_image

    root = engine.DEFAULT_MODEL_DIR.parents[1] / "examples"
    image = load_image(root / "waterfall.jpg")
    import cv2

    crop = image[140:300, 200:440]
    w, h = size
    crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
    mask = np.zeros((h, w), bool)
    mask[h // 4 : 3 * h // 4, w // 6 : 5 * w // 6] = True
    y = h / 2
    arrow = Arrow(((w * 0.3, y), (w * 0.3 + 16.0, y)))  # 16 px per 16-frame clip: 1 px/frame
    return Scene(np.ascontiguousarray(crop), [arrow], mask)


def _motion_cosine(model, control: str) -> float:
    from stillmotion.api import prepare
    from stillmotion.evaluation.motion_metrics import optical_flow

    sc = _photo_with_one_arrow()
    sc, field = prepare(sc.image, sc.arrows, mask=sc.mask)
    it, stats = engine.animate_diffusion(sc, field, frames=16, steps=6, seed=0, model=model, device="cpu",
                                         control=control, size=(sc.width, sc.height))  # fmt: skip
    video = np.stack(list(it))
    flow = np.mean([optical_flow(video[i], video[i + 1]) for i in range(len(video) - 1)], axis=0)
    speed = np.hypot(field[..., 0], field[..., 1])
    region = sc.mask & (speed >= 0.25 * speed.max())
    f, r = flow[region], field[region]
    cos = (f * r).sum(-1) / (np.linalg.norm(f, axis=-1) * np.linalg.norm(r, axis=-1) + 1e-6)
    return float(cos.mean())


@pytest.mark.skipif(engine.default_model_dir() is None, reason="the bundled model is not present")
@pytest.mark.parametrize("control", ["auto", "warp-guided"])
def test_the_bundled_model_follows_the_arrow(control):
    assert _motion_cosine(None, control) > 0.5


@pytest.mark.skipif(not (engine.PLAIN_MODEL_DIR / "model_index.json").is_file(),
                    reason="the plain model is not present (make train-tiny-plain)")  # fmt: skip
def test_the_plain_model_follows_the_arrow_only_with_warp_guidance(caplog):
    assert _motion_cosine("plain", "auto") > 0.5  # auto is warp-guided on the plain model
    with caplog.at_level(logging.WARNING, logger="stillmotion.diffusion"):
        alone = _motion_cosine("plain", "trained")
    assert alone < 0.5 and "untrained" in caplog.text
