"""Direct extension: the last frame of one clip conditions the next (the paper's "Direct" baseline).

Cost: N * T frames through the denoiser, ceil(N / L) * T calls (clips of L frames, the last one
shorter), plus one decode and re-encode of a frame per join (done by ``condition_on``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from stillmotion.sampling.base import Denoiser, sample_euler
from stillmotion.sampling.frame_noise import NoiseSource, as_noise_source
from stillmotion.sampling.segments import LatentChunk, clip_segments

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


@torch.no_grad()
def sample_direct(
    denoiser: Denoiser,
    noise: NoiseSource | torch.Tensor,
    sigmas: torch.Tensor,
    *,
    segment_len: int,
    condition_on: Callable[[torch.Tensor], dict[str, Any]],
    callback: StepCallback | None = None,
    **cond: Any,
) -> Iterator[LatentChunk]:
    """Sample back-to-back clips of ``segment_len`` frames, each conditioned on the previous clip's end.

    ``condition_on(latent [B, C, h, w]) -> {"image": ..., ...}`` turns the finished last latent frame of a
    clip into conditioning overrides for the next clip's denoiser calls; for a latent video model it
    decodes the frame and encodes it again exactly as an input photo would be (image latent and, for
    SVD, ``image_embeds``). The first clip uses the denoiser's own conditioning image. Clips are
    concatenated as they come (no frame is dropped).
    """
    noise = as_noise_source(noise)
    image_cond: dict[str, Any] = {}
    for a, b in clip_segments(noise.num_frames, segment_len):
        x = noise.frames(a, b) * sigmas[0]
        x = sample_euler(denoiser, x, sigmas, callback=callback, frames=slice(a, b), **image_cond, **cond)
        yield LatentChunk(a, x, a > 0)
        if b < noise.num_frames:
            image_cond = dict(condition_on(x[:, -1]))
