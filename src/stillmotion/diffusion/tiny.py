"""Tiny, randomly initialised components for tests, benchmarks and training from scratch.

Same classes as full-size Stable Video Diffusion, with the smallest configurations that construct
(about 1.8 M UNet parameters), built in-process and deterministic by seed: no download, seconds on
a CPU. ``tiny_svd_components`` gives the stock SVD parts (for diffusers' own
``StableVideoDiffusionPipeline``); ``tiny_components`` adds the motion encoder and adapter.
"""

from __future__ import annotations

from typing import Any

import torch


def _seeded(seed: int):
    # Seeds the global RNG for the constructors and restores it afterwards: callers' RNG is untouched.
    return torch.random.fork_rng(devices=[])


def tiny_unet(seed: int = 0, *, latent_channels: int = 4, num_frames: int = 8, sample_size: int = 16):
    # lazy: diffusers is an optional extra, imported only on this path
    from diffusers import UNetSpatioTemporalConditionModel

    with _seeded(seed):
        torch.manual_seed(seed)
        return UNetSpatioTemporalConditionModel(
            sample_size=sample_size,
            in_channels=2 * latent_channels,
            out_channels=latent_channels,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            block_out_channels=(32, 64),
            addition_time_embed_dim=32,
            projection_class_embeddings_input_dim=96,
            layers_per_block=2,
            cross_attention_dim=32,
            num_attention_heads=8,
            num_frames=num_frames,
        )


def tiny_vae(seed: int = 0):
    """A tiny AutoencoderKLTemporalDecoder: downscale factor 2, 4 latent channels."""
    # lazy: diffusers is an optional extra, imported only on this path
    from diffusers import AutoencoderKLTemporalDecoder

    with _seeded(seed):
        torch.manual_seed(seed)
        return AutoencoderKLTemporalDecoder(
            block_out_channels=[32, 64],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            latent_channels=4,
            layers_per_block=1,
        )


def tiny_image_encoder(seed: int = 0):
    # lazy: transformers is an optional extra, imported only on this path
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=32,
        projection_dim=32,
        num_hidden_layers=5,
        num_attention_heads=4,
        image_size=224,
        intermediate_size=37,
        patch_size=14,
    )
    with _seeded(seed):
        torch.manual_seed(seed)
        encoder = CLIPVisionModelWithProjection(config).eval()
    extractor = CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224})
    return encoder, extractor


def svd_scheduler():
    """The EulerDiscreteScheduler configuration stable-video-diffusion-img2vid(-xt) ship."""
    # lazy: diffusers is an optional extra, imported only on this path
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        interpolation_type="linear",
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )


def tiny_svd_components(
    seed: int = 0, *, autoencoder: str = "kl", num_frames: int = 8, **ae_kwargs: Any
) -> dict:
    """vae, image_encoder, feature_extractor, unet, scheduler (stock SVD classes, tiny sizes).

    ``autoencoder="kl"``: diffusers' AutoencoderKLTemporalDecoder; ``"space_to_depth"``: the fixed
    weightless :class:`~stillmotion.diffusion.autoencoder.SpaceToDepthAutoencoder` (``ae_kwargs``
    go to its constructor).
    """
    if autoencoder == "kl":
        vae = tiny_vae(seed)
    elif autoencoder == "space_to_depth":
        # lazy: diffusers is an optional extra, imported only on this path
        from stillmotion.diffusion.autoencoder import SpaceToDepthAutoencoder

        vae = SpaceToDepthAutoencoder(**ae_kwargs)
    else:
        raise ValueError(f"autoencoder must be 'kl' or 'space_to_depth', got {autoencoder!r}")
    image_encoder, feature_extractor = tiny_image_encoder(seed + 1)
    latent_channels = vae.config.latent_channels
    unet = tiny_unet(seed + 2, latent_channels=latent_channels, num_frames=num_frames)
    return {
        "vae": vae.eval(),
        "image_encoder": image_encoder,
        "feature_extractor": feature_extractor,
        "unet": unet.eval(),
        "scheduler": svd_scheduler(),
    }


def tiny_components(seed: int = 0, *, autoencoder: str = "kl", num_frames: int = 8, **ae_kwargs: Any) -> dict:
    """All StillMotionPipeline components, tiny: SVD's plus motion encoder and adapter (zero-init)."""
    # lazy: diffusers is an optional extra, imported only on this path
    from stillmotion.diffusion.motion_adapter import MotionAdapter
    from stillmotion.diffusion.motion_encoder import MotionEncoder

    parts = tiny_svd_components(seed, autoencoder=autoencoder, num_frames=num_frames, **ae_kwargs)
    with _seeded(seed):
        torch.manual_seed(seed + 3)
        encoder = MotionEncoder.for_unet(parts["unet"], base_channels=16, input_downsample=1)
        torch.manual_seed(seed + 4)
        adapter = MotionAdapter.from_unet(parts["unet"], encoder)
    parts["motion_encoder"] = encoder.eval()
    parts["motion_adapter"] = adapter.eval()
    return parts
