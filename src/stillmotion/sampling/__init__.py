"""Samplers: small functions over one denoiser interface (k-diffusion style).

A *denoiser* is any callable ``denoiser(x, sigma, **cond) -> x0`` where ``x`` is a noisy latent
video ``[B, F, C, h, w]`` at noise level ``sigma`` (a scalar) and the return value is the
guided estimate of the clean latents, same shape. ``cond`` carries per-call conditioning that
the long-video samplers vary; keys every denoiser understands:

- ``frames``: a ``slice`` (or 1-D index tensor) of the frames of the whole video that ``x`` covers,
  so the denoiser can pick the matching motion fields and per-frame guidance scales;
- ``image``: an optional replacement for the conditioning image latent (used by ``direct``).

Everything else (the UNet, guidance, the conditioning embeddings, call counting) lives in the
denoiser; samplers only decide which noisy frames go in and how the results are combined. The steps
are taken by the denoiser's solver (``base.solver_of``: Euler, or ``unipc.UniPC`` for a Wan model whose
scheduler is UniPC); ``sample_ode`` integrates one trajectory with it.

Long videos (``long.py``): ``sample_phased`` (the paper), ``sample_direct``, ``sample_freenoise`` and
``sample_gen_l_video`` are generators of finished :class:`LatentChunk` objects in frame order, so the
caller decodes and writes a segment at a time.
"""

from stillmotion.sampling.base import EULER, Denoiser, Euler, sample_euler, sample_ode, solver_of
from stillmotion.sampling.direct import sample_direct
from stillmotion.sampling.frame_noise import FrameNoise, TensorNoise
from stillmotion.sampling.freenoise import freenoise_noise, sample_freenoise
from stillmotion.sampling.gen_l_video import sample_gen_l_video
from stillmotion.sampling.long import LONG_METHODS, LongOptions, expected_cost, sample_long
from stillmotion.sampling.phased import sample_phased
from stillmotion.sampling.segments import LatentChunk
from stillmotion.sampling.unipc import UniPC

__all__ = [
    "EULER",
    "LONG_METHODS",
    "Denoiser",
    "Euler",
    "FrameNoise",
    "LatentChunk",
    "LongOptions",
    "TensorNoise",
    "UniPC",
    "expected_cost",
    "freenoise_noise",
    "sample_direct",
    "sample_euler",
    "sample_freenoise",
    "sample_gen_l_video",
    "sample_long",
    "sample_ode",
    "sample_phased",
    "solver_of",
]
