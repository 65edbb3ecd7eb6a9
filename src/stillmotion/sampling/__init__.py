"""Samplers: small functions over one denoiser interface (k-diffusion style).

A *denoiser* is any callable ``denoiser(x, sigma, **cond) -> x0`` where ``x`` is a noisy latent
video ``[B, F, C, h, w]`` at noise level ``sigma`` (a scalar) and the return value is the
guided estimate of the clean latents, same shape. ``cond`` carries per-call conditioning that
the long-video samplers vary; keys every denoiser understands:

- ``frames``: a ``slice`` (or 1-D index tensor) of the frames of the whole video that ``x`` covers,
  so the denoiser can pick the matching motion fields and per-frame guidance scales;
- ``image``: an optional replacement for the conditioning image latent (used by ``direct``).

Everything else (the UNet, guidance, the conditioning embeddings, call counting) lives in the
denoiser; samplers only decide which noisy frames go in and how the results are combined.
"""

from stillmotion.sampling.base import Denoiser, sample_euler

__all__ = ["Denoiser", "sample_euler"]
