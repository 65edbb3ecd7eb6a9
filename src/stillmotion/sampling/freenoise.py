"""FreeNoise baseline: shuffled-window noise rescheduling plus window-fused temporal attention.

Cost: N * T frames through the denoiser and T calls: every step is one pass over all frames; only the
temporal attention runs per window (about L / stride times per frame, not counted as frame passes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from stillmotion.sampling.base import Denoiser, sample_ode
from stillmotion.sampling.frame_noise import NoiseSource, as_noise_source
from stillmotion.sampling.parameterization import parameterization_of
from stillmotion.sampling.segments import LatentChunk, check_length

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


def freenoise_noise(
    noise: NoiseSource | torch.Tensor, window: int, stride: int, generator: torch.Generator
) -> torch.Tensor:
    """Base noise for the first ``window`` frames; each later block of ``stride`` frames is a random
    permutation of the block ``window`` frames earlier, so any window holds the same set of noises.

    A block cut short by the video's end takes the first frames of its full block's permutation: frame
    f's noise is the same whatever the video's length.

    A source with a per-frame ``offset(start, stop)`` over ``pure`` noise (warp-guided sampling's start:
    the reference latents / sigma) has only its pure noise shuffled; the offset belongs to the frames."""
    noise = as_noise_source(noise)
    offset = getattr(noise, "offset", None)
    source = getattr(noise, "pure", noise) if offset is not None else noise
    n = noise.num_frames
    check_length(n, window)
    stride = min(stride, window)  # a block is a permutation of frames already made
    base = source.frames(0, min(window, n))
    if n <= window:
        return base if offset is None else base + offset(0, n).to(base.device, base.dtype)
    out = torch.empty((base.shape[0], n, *base.shape[2:]), device=base.device, dtype=base.dtype)
    out[:, :window] = base
    for i in range(window, n, stride):
        size = min(stride, n - i)
        perm = torch.randperm(stride, generator=generator).to(base.device)[:size]
        out[:, i : i + size] = out[:, i - window : i - window + stride][:, perm]
    if offset is not None:
        out = out + offset(0, n).to(out.device, out.dtype)
    return out


@torch.no_grad()
def sample_freenoise(
    denoiser: Denoiser,
    noise: NoiseSource | torch.Tensor,
    sigmas: torch.Tensor,
    *,
    segment_len: int,
    stride: int | None = None,
    chunk_frames: int | None = None,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    **cond: Any,
) -> Iterator[LatentChunk]:
    """All frames in one pass per step, FreeNoise-style; ``stride`` defaults to L // 4 (FreeNoise: 16 / 4).
    ``chunk_frames`` runs the per-frame layers on at most that many frames at a time (memory).

    A denoiser with a ``windowed_temporal_attention(window, stride)`` hook (a context manager, see
    ``MotionDenoiser``) has its temporal attention window-fused for the duration of sampling; without
    it (e.g. a toy denoiser) only the noise rescheduling applies.
    Finished latents are yielded in chunks of ``segment_len`` frames. The whole video is one trajectory of
    the denoiser's solver (a multistep solver's history covers every frame).
    """
    noise = as_noise_source(noise)
    n = noise.num_frames
    stride = stride or max(1, segment_len // 4)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    x = parameterization_of(denoiser).prior(freenoise_noise(noise, segment_len, stride, gen), sigmas[0])
    hook = getattr(denoiser, "windowed_temporal_attention", None)
    if hook is None:
        fusion = contextlib.nullcontext()
    elif chunk_frames is None:  # hooks that know no chunking (e.g. Wan's) take (window, stride)
        fusion = hook(segment_len, stride)
    else:
        fusion = hook(segment_len, stride, chunk_frames=chunk_frames)
    with fusion:
        x = sample_ode(denoiser, x, sigmas, callback=callback, frames=slice(0, n), **cond)
    for a in range(0, n, segment_len):
        yield LatentChunk(a, x[:, a : a + segment_len], 0)
