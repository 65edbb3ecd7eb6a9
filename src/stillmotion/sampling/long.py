"""One entry point for the long-video samplers, and what each costs.

``sample_long(method, ...)`` dispatches to ``sample_phased`` (the paper; the default), ``sample_direct``,
``sample_freenoise`` or ``sample_gen_l_video`` with the options each understands, and
``expected_cost(method, ...)`` gives the denoiser calls and frame passes it will make (the formulas in
each sampler's docstring), which the engine uses for its progress bar and the tests check against the
denoiser's counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from stillmotion.errors import UserInputError
from stillmotion.sampling import segments as seg
from stillmotion.sampling.base import Denoiser
from stillmotion.sampling.direct import sample_direct
from stillmotion.sampling.frame_noise import NoiseSource
from stillmotion.sampling.freenoise import sample_freenoise
from stillmotion.sampling.gen_l_video import sample_gen_l_video
from stillmotion.sampling.phased import sample_phased
from stillmotion.sampling.segments import LatentChunk

LONG_METHODS = ("phased", "direct", "freenoise", "gen-l-video")


@dataclass(frozen=True)
class LongOptions:
    """Knobs of the long-video samplers (CLI: --long-method, --gamma, --omega, --overlap, --stride)."""

    method: str = "phased"
    gamma: float = 0.8  # phased: share of the steps later segments take over from segment 1
    omega: float = 0.2  # phased: randomness added to the shared noise (eq. 11)
    overlap: int = 1  # phased: anchor frames each later segment takes from the previous one
    stride: int | None = None  # freenoise (default L // 4) and gen-l-video (default L // 2) window stride

    def __post_init__(self) -> None:
        if self.method not in LONG_METHODS:
            raise UserInputError(
                f"--long-method must be one of {', '.join(LONG_METHODS)}, got {self.method!r}"
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise UserInputError(f"--gamma must be in [0, 1], got {self.gamma}")
        if self.omega < 0:
            raise UserInputError(f"--omega must be >= 0, got {self.omega}")
        if self.overlap < 0:
            raise UserInputError(f"--overlap must be >= 0, got {self.overlap}")
        if self.stride is not None and self.stride < 1:
            raise UserInputError(f"--stride must be >= 1, got {self.stride}")

    def window_stride(self, clip_len: int) -> int:
        default = clip_len // 4 if self.method == "freenoise" else clip_len // 2
        return self.stride or max(1, default)


def sample_long(
    options: LongOptions,
    denoiser: Denoiser,
    noise: NoiseSource | torch.Tensor,
    sigmas: torch.Tensor,
    *,
    clip_len: int,
    generator: torch.Generator | None = None,
    unet: nn.Module | None = None,
    condition_on: Callable[[torch.Tensor], Any] | None = None,
    **cond: Any,
) -> Iterator[LatentChunk]:
    """Finished latent chunks of the whole video, in frame order (see :class:`LatentChunk`).

    ``unet`` is needed by freenoise's window-fused attention, ``condition_on`` by direct (last latent
    frame -> conditioning image for the next clip).
    """
    m = options.method
    if m == "phased":
        overlap = min(options.overlap, clip_len - 1)
        return sample_phased(
            denoiser, noise, sigmas, segment_len=clip_len, gamma=options.gamma, omega=options.omega,
            overlap=overlap, generator=generator, **cond,
        )  # fmt: skip
    if m == "direct":
        if condition_on is None:
            raise ValueError("direct needs condition_on (last latent frame -> conditioning image)")
        return sample_direct(denoiser, noise, sigmas, segment_len=clip_len, condition_on=condition_on, **cond)
    stride = options.window_stride(clip_len)
    if m == "freenoise":
        return sample_freenoise(
            denoiser,
            noise,
            sigmas,
            segment_len=clip_len,
            stride=stride,
            unet=unet,
            generator=generator,
            **cond,
        )
    return sample_gen_l_video(denoiser, noise, sigmas, segment_len=clip_len, stride=stride, **cond)


@dataclass(frozen=True)
class Cost:
    denoiser_calls: int
    frame_passes: (
        int  # frames through the denoiser; x2 with classifier-free guidance = UNet frame-evaluations
    )


def expected_cost(options: LongOptions, num_frames: int, clip_len: int, num_steps: int) -> Cost:
    m = options.method
    if m == "phased":
        overlap = min(options.overlap, clip_len - 1)
        args = (num_frames, clip_len, num_steps, options.gamma, overlap)
        return Cost(seg.phased_denoiser_calls(*args), seg.phased_frame_evaluations(*args))
    if m == "direct":
        return Cost(
            seg.direct_denoiser_calls(num_frames, clip_len, num_steps),
            seg.direct_frame_evaluations(num_frames, clip_len, num_steps),
        )
    if m == "freenoise":
        return Cost(num_steps, seg.freenoise_frame_evaluations(num_frames, clip_len, num_steps))
    stride = options.window_stride(clip_len)
    return Cost(
        seg.gen_l_video_denoiser_calls(num_frames, clip_len, num_steps, stride),
        seg.gen_l_video_frame_evaluations(num_frames, clip_len, num_steps, stride),
    )
