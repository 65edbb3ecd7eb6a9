"""Warped image conditioning (an addition to the paper, stillmotion.diffusion.warp_condition): the warped
frames follow the field, windows are order-independent and only a few frames are held for long videos,
the denoiser and the pipeline use them only when the model asks for them, and the trainer trains and
saves the flag."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from stillmotion.diffusion.pipeline import StillMotionPipeline  # noqa: E402
from stillmotion.diffusion.tiny import tiny_components  # noqa: E402
from stillmotion.diffusion.warp_condition import WarpedCondition, warped_image_frames  # noqa: E402

W, H = 48, 32


def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (H, W, 3)).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(img[::4, ::4], 4, 0), 4, 1))  # 4-px blocks: flow-friendly


def right(speed: float = 1.0) -> np.ndarray:
    field = np.zeros((H, W, 2), np.float32)
    field[..., 0] = speed
    return field


def test_warped_frames_move_the_image_along_the_field():
    img = image()
    frames = warped_image_frames(img, right(1.0), 5)
    assert frames.shape == (5, H, W, 3) and np.array_equal(frames[0], img)
    # whole-pixel motion: frame t is the image shifted t px to the right (away from the left edge)
    for t in (1, 2, 4):
        assert np.abs(frames[t][:, 8:].astype(int) - img[:, 8 - t : W - t].astype(int)).mean() < 2.0


def test_windows_do_not_depend_on_order_and_hold_only_a_few_frames():
    img, encode = image(), (lambda px: px[:, :, ::4, ::4].clone())
    kw = dict(noise_aug_strength=0.02, seed=7)
    whole = warped_image_frames(img, right(), 20)
    roomy = WarpedCondition(img, right(), 20, None, encode, keep=64, **kw)
    tight = WarpedCondition(img, right(), 20, None, encode, keep=4, cache_size=1, **kw)
    late_first = tight.window(10, 18)
    assert len(tight._held) == 4  # the warp's last frames only, whatever the length
    assert torch.equal(tight.window(0, 8), roomy.window(0, 8)) and tight.restarts == 1  # went back
    assert torch.equal(late_first, roomy.window(10, 18)) and late_first.shape == (1, 8, 3, H // 4, W // 4)
    assert torch.equal(tight.window(10, 18), late_first)  # re-encoded after the cache dropped it
    assert np.array_equal(tight.frames(6, 12), whole[6:12])
    assert np.array_equal(tight.frames(9, 11), whole[9:11])
    with pytest.raises(IndexError):
        tight.frames(15, 21)


def test_pipeline_uses_warped_latents_only_when_the_model_asks():
    pipe = StillMotionPipeline(**tiny_components(0))
    kw = dict(num_frames=6, width=W, height=H, generator=torch.Generator().manual_seed(0))
    den = pipe.prepare(image(), right(), **kw).denoiser
    assert den.frame_latents is None  # stock behaviour: SVD's one image latent for every frame
    pipe.motion_adapter.register_to_config(warped_image_condition=True)
    den = pipe.prepare(image(), right(), **kw).denoiser
    assert den.frame_latents is not None
    lat = den.frame_latents.window(0, 6)
    assert lat.shape == (1, 6, *den.image_latents.shape[1:])
    # frame 0 is the image itself; later frames differ more and more
    assert (lat[0, 0] - den.image_latents[0]).abs().mean() < 0.05
    assert (lat[0, 5] - den.image_latents[0]).abs().mean() > (lat[0, 1] - den.image_latents[0]).abs().mean()
    x = torch.randn(den.latent_shape(6))
    den.set_schedule(2)
    with_warp = den(x, den.sigmas[0])
    den.frame_latents = None
    assert not torch.allclose(with_warp, den(x, den.sigmas[0]))
    # without a motion field the conditioning is the still image, as in SVD
    assert pipe.prepare(image(), None, **kw).denoiser.frame_latents is None


@pytest.mark.parametrize("residual", [False, True])
def test_trainer_trains_and_saves_the_flag(tmp_path, residual):
    import skimage.data
    from PIL import Image

    from stillmotion.training.config import load_config
    from stillmotion.training.diffusion import DiffusionConfig, train
    from stillmotion.training.prepare import PrepareSettings, prepare_synthetic

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skimage.data.coffee()).save(photos / "coffee.png")
    prepare_synthetic(photos, tmp_path / "cache", PrepareSettings(frames=8, size=(32, 32)), clips_per_photo=3)
    out = tmp_path / "run"
    cfg = load_config(DiffusionConfig, "configs/diffusion_tiny.yaml",
                      [f"data={tmp_path / 'cache'}", f"output_dir={out}", "progress=false", "workers=0",
                       "eval_every=0", "max_steps=2", "holdout_clips=1", "warped_image_condition=true",
                       f"condition_residual={str(residual).lower()}"])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg)
    finally:
        torch.set_num_threads(before)
    pipe = StillMotionPipeline.from_pretrained(out / "model")
    assert pipe.motion_adapter.config.warped_image_condition is True
    assert getattr(pipe.motion_adapter.config, "condition_residual", False) is residual


def test_condition_residual_denoises_the_difference_to_the_conditioning():
    pipe = StillMotionPipeline(**tiny_components(0))
    pipe.motion_adapter.register_to_config(warped_image_condition=True)
    kw = dict(num_frames=6, width=W, height=H, min_guidance_scale=1.0, max_guidance_scale=2.0)
    den = pipe.prepare(image(), right(), generator=torch.Generator().manual_seed(0), **kw).denoiser
    pipe.motion_adapter.register_to_config(condition_residual=True)
    res = pipe.prepare(image(), right(), generator=torch.Generator().manual_seed(0), **kw).denoiser
    assert res.condition_residual and not den.condition_residual and res.do_cfg
    ref = res.frame_latents.window(0, 6).float() * pipe.vae.config.scaling_factor
    # the hook the phased sampler uses to carry segment 1 to later windows: the warped conditioning,
    # residual or not (the same frames and augmentation: same seed)
    assert torch.equal(res.reference(0, 6), ref) and torch.equal(den.reference(0, 6), ref)
    still = pipe.prepare(image(), None, generator=torch.Generator().manual_seed(0), **kw).denoiser
    assert still.reference(0, 6) is None  # no motion field: nothing to carry along
    x = torch.randn(res.latent_shape(6), generator=torch.Generator().manual_seed(1))
    # x0 = r + (the plain preconditioning applied to x - r), both guidance branches sharing r
    for sigma in (0.3, 5.0):
        assert torch.allclose(res(x, sigma), den(x - ref, sigma) + ref, atol=1e-5)
    # a model whose UNet outputs nothing returns its conditioning at high noise: what makes it easy to learn
    torch.nn.init.zeros_(pipe.unet.conv_out.weight)
    torch.nn.init.zeros_(pipe.unet.conv_out.bias)
    x0 = res(x * 80, 80.0)
    assert (x0 - ref).abs().max() < (x * 80 - ref).abs().max() / 80**2 * 1.01
    # ... where the plain parameterisation returns x / (sigma^2 + 1), blind to the conditioning
    assert torch.allclose(den(x * 80, 80.0), x * 80 / (80**2 + 1), atol=1e-6)


def test_direct_conditions_a_warped_model_on_the_last_frame_carried_along_the_field():
    from stillmotion.engines.long_video import stream_long_video
    from stillmotion.sampling.long import LongOptions

    pipe = StillMotionPipeline(**tiny_components(0, num_frames=4))
    pipe.motion_adapter.register_to_config(warped_image_condition=True)
    prepared = pipe.prepare(image(), right(2.0), num_frames=10, width=W, height=H,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
    den = prepared.denoiser

    class Recorder:
        def __init__(self, inner):
            self.inner, self.images = inner, []

        def __call__(self, x, sigma, **cond):
            self.images.append(cond.get("image"))
            return self.inner(x, sigma, **cond)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    made = []
    starting_from = den.frame_latents.starting_from

    def record(first, frames, seed, index):
        made.append((first, starting_from(first, frames, seed, index)))
        return made[-1][1]

    den.frame_latents.starting_from = record
    rec = Recorder(den)
    recorded = prepared.with_denoiser(rec)
    out = [f for f, _ in stream_long_video(pipe, recorded, LongOptions("direct"), steps=2, seed=0)]
    assert sum(f.shape[1] for f in out) == 10  # the paper's cut: stock clips [0,4) [4,8) [8,10)
    assert rec.images[:2] == [None, None]  # the first clip: the input's own warped frames
    later = rec.images[2:]
    assert len(later) == 4 and len(made) == 2 and all(img.ndim == 5 and img.shape[1] == 4 for img in later)
    # each later clip: the previous clip's last frame (decoded) carried along the field; the clip starts
    # one frame after it, so its conditioning is that frame moved 1..L steps
    assert made[0][0].dtype == np.uint8 and made[0][0].shape == (H, W, 3)
    assert torch.equal(later[0], made[0][1].window(1, 5)) and torch.equal(later[2], made[1][1].window(1, 5))
    assert np.array_equal(made[0][1].frames(0, 5), warped_image_frames(made[0][0], made[0][1].field, 5))


def test_per_frame_flows_are_warped_step_by_step_and_picked_up_where_a_clip_starts():
    pipe = StillMotionPipeline(**tiny_components(0))
    pipe.motion_adapter.register_to_config(warped_image_condition=True)
    flows = np.stack([right(1.0), right(0.0), right(2.0), right(1.0), right(1.0)])  # steps of a 6-frame clip
    den = pipe.prepare(image(), flows, num_frames=6, width=W, height=H, refine=False,
                       generator=torch.Generator().manual_seed(0)).denoiser  # fmt: skip
    wc = den.frame_latents
    assert wc is not None and wc.field.shape == (6, H, W, 2)  # the last step's field repeated to 6 frames
    frames = wc.frames(0, 6)
    assert np.array_equal(frames, warped_image_frames(image(), wc.field, 6))
    assert np.array_equal(frames[2], frames[1])  # the second step does not move
    later = wc.starting_from(frames[2], 3, seed=1, index=2)
    assert np.array_equal(later.field, wc.field[2:])  # the clip starting at frame 2 moves 2, 1, 1 px
