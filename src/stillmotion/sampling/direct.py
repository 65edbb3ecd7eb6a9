"""Direct extension: the last frame of one clip conditions the next (the paper's "Direct" baseline).

Cost: T * sum of clip lengths frames through the denoiser and K * T calls, K = 1 + ceil((N - L) / (L - 1))
clips of L frames (the last one shorter) that share one frame each, plus one decode and re-encode of a
frame per join (done by ``condition_on``). With N = 125, L = 25: clips [0,25) [24,49) ... [120,125), the
same cut as phased's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from stillmotion.sampling.base import Denoiser, sample_euler
from stillmotion.sampling.frame_noise import NoiseSource, as_noise_source
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
    """Sample clips of ``segment_len`` frames one after another, each conditioned on the previous clip's
    last frame, which is also its first: an image-to-video model's frame 0 reproduces its conditioning
    image, so a later clip starts on the frame it is conditioned on and only its frames 1.. are new
    (yielding frame 0 again would freeze the video for a frame at every join).

    ``condition_on(latent [B, C, h, w], index) -> {"image": ..., ...}`` turns the finished last latent
    frame of a clip (frame ``index`` of the video) into conditioning overrides for the next clip's
    denoiser calls; for a latent video model it
    decodes the frame and encodes it again exactly as an input photo would be (image latent, or per-frame
    latents for a warped-conditioning model, and for SVD ``image_embeds``). The first clip uses the
    denoiser's own conditioning image.
    """
    noise = as_noise_source(noise)
    image_cond: dict[str, Any] = {}
    for a, b in direct_segments(noise.num_frames, segment_len):
        x = noise.frames(a, b) * sigmas[0]
        x = sample_euler(denoiser, x, sigmas, callback=callback, frames=slice(a, b), **image_cond, **cond)
        shared = int(a > 0 and segment_len > 1)  # frame a is the previous clip's, already yielded
        yield LatentChunk(a + shared, x[:, shared:], a > 0)
        if b < noise.num_frames:
            image_cond = dict(condition_on(x[:, -1], b - 1))
