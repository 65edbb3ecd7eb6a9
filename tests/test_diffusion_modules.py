"""The diffusion building blocks: space-to-depth autoencoder, motion encoder, denoiser interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from stillmotion.diffusion.autoencoder import SpaceToDepthAutoencoder, orthonormal_basis  # noqa: E402
from stillmotion.diffusion.motion_encoder import MotionEncoder, normalize_flows  # noqa: E402
from stillmotion.diffusion.pipeline import StillMotionPipeline  # noqa: E402
from stillmotion.diffusion.tiny import tiny_components  # noqa: E402
from tolerances import FRAME_ATOL, MODEL_ATOL  # noqa: E402


def test_space_to_depth_is_lossless_and_orthonormal():
    basis = orthonormal_basis(4)
    assert torch.allclose(basis @ basis.T, torch.eye(48), atol=1e-5)
    ae = SpaceToDepthAutoencoder(downscale_factor=4)
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    z = ae.encode(x).latent_dist.mode()
    assert z.shape == (2, 48, 4, 6)
    assert torch.equal(z, ae.encode(x).latent_dist.sample())
    assert torch.allclose(ae.decode(z, num_frames=2).sample, x, atol=1e-5)
    # the first channel is luma DC: f * sqrt(3) times the block's mean
    assert torch.allclose(
        z[:, 0], torch.nn.functional.avg_pool2d(x.sum(1, keepdim=True), 4)[:, 0] * 4 / 3**0.5, atol=1e-5
    )
    lossy = SpaceToDepthAutoencoder(downscale_factor=4, latent_channels=12)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 6), size=(16, 24), mode="bilinear")
    err = (lossy.decode(lossy.encode(smooth).latent_dist.mode()).sample - smooth).abs().mean()
    assert err < 0.05


def test_pipeline_runs_with_space_to_depth_autoencoder(tmp_path):
    parts = tiny_components(0, autoencoder="space_to_depth", downscale_factor=2)
    pipe = StillMotionPipeline(**parts)
    assert pipe.vae_scale_factor == 2 and pipe.unet.config.in_channels == 24
    img = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    field = np.ones((32, 32, 2), np.float32)
    kw = dict(width=32, height=32, num_frames=3, num_inference_steps=2)
    out = pipe(img, field, generator=torch.Generator().manual_seed(0), **kw)
    assert out.frames.shape == (1, 3, 32, 32, 3) and np.isfinite(out.frames).all()
    pipe.save_pretrained(tmp_path / "s2d")
    again = StillMotionPipeline.from_pretrained(tmp_path / "s2d")
    assert isinstance(again.vae, SpaceToDepthAutoencoder)
    reloaded = again(img, field, generator=torch.Generator().manual_seed(0), **kw).frames
    assert np.abs(reloaded - out.frames).max() <= FRAME_ATOL


def test_motion_encoder_levels_and_static_fields():
    enc = MotionEncoder(
        block_out_channels=(8, 16, 24), layers_per_block=1, input_downsample=1, stem_channels=8
    )
    assert enc.input_size((6, 10)) == (12, 20)
    field = torch.randn(1, 1, 2, 12, 20, generator=torch.Generator().manual_seed(0))
    static = field.expand(1, 5, 2, 12, 20)
    feats = enc(static)
    assert [tuple(t.shape) for t in feats] == [(5, 8, 6, 10), (5, 16, 3, 5), (5, 24, 2, 3)]
    assert all(t.stride(0) == 0 for t in feats)  # encoded once, expanded
    dense = enc(static.contiguous())
    # one frame against five in a batch: the convolutions sum in another order (up to 1.4e-6 seen)
    assert all(torch.allclose(a, b, atol=MODEL_ATOL) for a, b in zip(feats, dense, strict=True))
    assert not torch.allclose(feats[-1], enc(static + 0.5)[-1], atol=MODEL_ATOL)
    # normalisation: percent of the longer side per frame, independent of resolution
    px = torch.full((1, 1, 2, 32, 64), 6.4)
    assert torch.allclose(normalize_flows(px, (32, 64), (8, 16)), torch.full((1, 1, 2, 8, 16), 10.0))
    assert normalize_flows(px.expand(1, 500, 2, 32, 64), (32, 64), (8, 16)).stride(1) == 0


def test_denoiser_windows_overrides_and_counters():
    pipe = StillMotionPipeline(**tiny_components(0))
    with torch.no_grad():
        for p in pipe.motion_adapter.parameters():
            p.normal_(0, 0.2)
    img = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    seq = np.zeros((12, 16, 16, 2), np.float32)
    seq[6:, ..., 0] = 2.0  # the second half of the video moves right
    den = pipe.prepare(
        img, seq, num_frames=12, width=16, height=16, generator=torch.Generator().manual_seed(0)
    ).denoiser
    assert den.clip_frames == 8 and den.num_frames == 12 and den.do_cfg
    # SVD's ramp per clip the UNet sees: a window of 4 frames anywhere in the video is guided as a clip
    assert torch.equal(den.guidance_scales(0, 8), torch.linspace(1.0, 3.0, 8))
    assert torch.equal(den.guidance_scales(8, 12), torch.linspace(1.0, 3.0, 4))
    with den.windowed_temporal_attention(4, 2):
        fused = den.guidance_scales(0, 8)  # windows 0, 2, 4 of 4 frames, triangular weights 1 2 2 1
    ramp = torch.linspace(1.0, 3.0, 4)
    assert fused[0] == ramp[0] and fused[1] == ramp[1]  # only in window 0
    assert fused[2] == pytest.approx(float((2 * ramp[2] + ramp[0]) / 3))  # window 0 at 2, window 1 at 0
    assert fused[-1] == ramp[-1]
    assert torch.equal(den.guidance_scales(0, 8), torch.linspace(1.0, 3.0, 8))  # hook gone
    sigmas = den.set_schedule(3)
    assert sigmas.shape == (4,) and sigmas[-1] == 0
    x = torch.randn(den.latent_shape(4), generator=torch.Generator().manual_seed(1)) * sigmas[1]
    a = den(x, sigmas[1], frames=slice(0, 4))
    b = den(x, sigmas[1], frames=slice(8, 12))
    assert not torch.allclose(a, b)  # other motion fields and guidance scales
    assert den.unet_calls == 2 and den.frame_evaluations == 2 * 2 * 4
    assert torch.equal(den(x, sigmas[1], frames=slice(0, 4)), a)  # cached features, same result
    other = den.encode_condition_image(torch.zeros(1, 3, 16, 16), torch.Generator().manual_seed(0))
    assert other.shape == den.image_latents.shape
    c = den(x, sigmas[1], frames=slice(0, 4), image=other)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="do not fit"):
        den(x, sigmas[1], frames=slice(10, 14))


def test_pipeline_runs_in_bfloat16_with_mask_and_lora():
    """Half-precision plumbing (motion features, strength, mask blend, LoRA) on the CPU's bf16."""
    from stillmotion.diffusion import lora

    pipe = StillMotionPipeline(**tiny_components(0))
    with torch.no_grad():
        for p in pipe.motion_adapter.parameters():
            p.normal_(0, 0.1)
    lora.add_static_camera_lora(pipe.unet)
    pipe.to(torch.bfloat16)
    img = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[:, :8] = True
    out = pipe(img, np.ones((16, 16, 2), np.float32), mask=mask, width=16, height=16, num_frames=3,
               num_inference_steps=1, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert out.frames.dtype == np.float32 and np.isfinite(out.frames).all()


def test_per_channel_normalisation_whitens_and_stays_lossless(tmp_path):
    from stillmotion.diffusion.autoencoder import latent_statistics

    plain = SpaceToDepthAutoencoder(downscale_factor=4)
    gen = torch.Generator().manual_seed(0)
    # smooth pictures: most energy in the low frequencies, as in photos
    x = torch.nn.functional.interpolate(torch.rand(8, 3, 8, 8, generator=gen), size=(32, 32), mode="bilinear")
    x = x * 2 - 1
    mean, std = latent_statistics(plain, [x[:5], x[5:]])
    z_plain = plain.encode(x).latent_dist.mode()
    assert np.allclose(mean, z_plain.mean((0, 2, 3)).numpy(), atol=1e-4)
    assert std[0] > 10 * min(std)  # DC dwarfs the finest coefficients: why one global scale fails
    ae = SpaceToDepthAutoencoder(downscale_factor=4, latents_mean=mean, latents_std=std, scaling_factor=1.0)
    z = ae.encode(x).latent_dist.mode()
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(48), atol=1e-3)
    spread = z.std((0, 2, 3), unbiased=False)
    floored = torch.tensor(std) <= 1e-3  # channels that hardly vary keep the floor, never blow up
    assert torch.allclose(spread[~floored], torch.ones(int((~floored).sum())), atol=1e-2)
    assert bool((spread[floored] <= 1).all())
    assert torch.allclose(ae.decode(z).sample, x, atol=1e-4)  # still lossless at the full channel count
    ae.save_pretrained(tmp_path / "vae")
    again = SpaceToDepthAutoencoder.from_pretrained(tmp_path / "vae")
    assert torch.equal(again.encode(x).latent_dist.mode(), z)
    with pytest.raises(ValueError, match="48 values"):
        SpaceToDepthAutoencoder(downscale_factor=4, latents_mean=mean[:3], latents_std=std)
    with pytest.raises(ValueError, match="> 0"):
        SpaceToDepthAutoencoder(downscale_factor=4, latents_mean=mean, latents_std=[0.0] * 48)
    with pytest.raises(ValueError, match="no frames"):
        latent_statistics(plain, [])
