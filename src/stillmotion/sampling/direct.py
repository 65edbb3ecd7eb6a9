"""Direct extension: the last frame of one clip conditions the next (the paper's "Direct" baseline).

Cost: T * N frames through the denoiser and K * T calls, K = ceil(N / L) clips of L frames (the last
one may be shorter) that tile the video, plus one decode and re-encode of a frame per join (done by
``condition_on``). With N = 125, L = 25: clips [0,25) [25,50) ... [100,125), the paper's K = 5.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from stillmotion.sampling.base import Denoiser, sample_ode
from stillmotion.sampling.frame_noise import NoiseSource, as_noise_source
from stillmotion.sampling.parameterization import parameterization_of
from stillmotion.sampling.segments import LatentChunk, direct_segments

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


@torch.no_grad()
def sample_direct(
    denoiser: Denoiser,
    noise: NoiseSource | torch.Tensor,
    sigmas: torch.Tensor,
    *,
    segment_len: int,
    condition_on: Callable[[torch.Tensor, int], dict[str, Any]],
    callback: StepCallback | None = None,
    **cond: Any,
) -> Iterator[LatentChunk]:
    """Sample stock clips of ``segment_len`` frames one after another, each conditioned on the previous
    clip's last frame, and concatenate them (paper, section 3.4).

    ``condition_on(latent [B, C, h, w], index) -> {"image": ..., ...}`` turns the finished last latent
    frame of a clip (frame ``index`` of the video) into conditioning overrides for the next clip, which
    starts at frame ``index + 1``; for a latent video model it decodes the frame and encodes it again
    exactly as an input photo would be (image latent and CLIP embedding; for a warped-conditioning model
    the frame carried on along the field from ``index + 1``). An image-to-video model's frame 0 reproduces
    its conditioning image, so with a plain image condition a later clip's first frame repeats the
    previous clip's last one, as in the paper's Direct. The first clip uses the denoiser's own
    conditioning. Each clip is its own sample: a multistep solver's history starts afresh per clip.
    """
    noise = as_noise_source(noise)
    image_cond: dict[str, Any] = {}
    for a, b in direct_segments(noise.num_frames, segment_len):
        x = parameterization_of(denoiser).prior(noise.frames(a, b), sigmas[0])
        x = sample_ode(denoiser, x, sigmas, callback=callback, frames=slice(a, b), **image_cond, **cond)
        yield LatentChunk(a, x, int(a > 0))
        if b < noise.num_frames:
            image_cond = dict(condition_on(x[:, -1], b - 1))
