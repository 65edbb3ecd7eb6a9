"""Gen-L-Video baseline: overlapping windows denoised every step, their estimates averaged.

Cost: T * sum of window lengths frames through the denoiser and T * (number of windows) calls; with
windows of L frames every ``stride`` frames each frame passes about L / stride times per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from stillmotion.sampling.base import Denoiser, solver_of
from stillmotion.sampling.frame_noise import NoiseSource, as_noise_source
from stillmotion.sampling.parameterization import parameterization_of
from stillmotion.sampling.segments import LatentChunk, sliding_windows

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


def average_windows(
    denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, windows: list[tuple[int, int]], **cond: Any
) -> torch.Tensor:
    """x0 of the whole video: each window denoised on its own, overlapping estimates averaged uniformly."""
    total = torch.zeros_like(x)
    count = torch.zeros(x.shape[1], device=x.device, dtype=x.dtype)
    for a, b in windows:
        total[:, a:b] += denoiser(x[:, a:b], sigma, frames=slice(a, b), **cond)
        count[a:b] += 1
    return total / count.view(1, -1, *([1] * (x.ndim - 2)))


@torch.no_grad()
def sample_gen_l_video(
    denoiser: Denoiser,
    noise: NoiseSource | torch.Tensor,
    sigmas: torch.Tensor,
    *,
    segment_len: int,
    stride: int | None = None,
    callback: StepCallback | None = None,
    **cond: Any,
) -> Iterator[LatentChunk]:
    """Sample all ``noise.num_frames`` frames jointly with windows of ``segment_len`` every ``stride``
    frames (default L // 4, the 4 to 8 frames of Gen-L-Video's paper; ``LongOptions.window_stride``).

    The window estimates are combined *before* the step, so the whole video takes exactly one step of the
    denoiser's solver per noise level (a stateful scheduler's internal index must advance once per level,
    not per window): one trajectory, whose multistep history holds the averaged estimates.
    Finished latents are yielded in chunks of ``segment_len`` frames (no joins: windows blend).
    """
    noise = as_noise_source(noise)
    n = noise.num_frames
    windows = sliding_windows(n, segment_len, stride or max(1, segment_len // 4))
    param = parameterization_of(denoiser)
    x = param.prior(noise.frames(0, n), sigmas[0])
    path = solver_of(denoiser).start(sigmas, param)
    for i in range(len(sigmas) - 1):
        x0 = average_windows(denoiser, x, sigmas[i], windows, **cond)
        x = path.step(i, x, x0)
        if callback is not None:
            callback(i, x, x0)
    for a in range(0, n, segment_len):
        yield LatentChunk(a, x[:, a : a + segment_len], 0)
