"""One entry point for the long-video samplers, and what each costs.

``sample_long(method, ...)`` dispatches to ``sample_phased`` (the paper; the default), ``sample_direct``,
``sample_freenoise`` or ``sample_gen_l_video`` with the options each understands, and
``expected_cost(method, ...)`` gives the denoiser calls and frame passes it will make (the formulas in
each sampler's docstring), which the engine uses for its progress bar and the tests check against the
denoiser's counters. Running one on a pipeline and decoding its chunks as they come is the engines'
work (``stillmotion.engines.long_video.stream_long_video``): this module knows only denoisers and tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

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


# phased's later segments: "motion" (here: reference when the model follows it, else own; the engines
# resolve it per model first, engines.backbone_run.motion_carry), "reference" (the motion reference),
# "appearance" (the reference with only segment 1's mean deviation from it, moved along), "own" (the
# model's own motion from where the previous segment ended), "copy" (the paper)
CARRY_MODES = ("motion", "reference", "appearance", "own", "copy")


@dataclass(frozen=True)
class LongOptions:
    """Knobs of the long-video samplers (CLI: --long-method, --gamma, --branch-sigma, --omega, --overlap,
    --carry, --stride, --chunk-frames)."""

    method: str = "phased"
    gamma: float = 0.8  # phased: share of the steps later segments take over from segment 1 (eq. 9)
    # phased: branch at this noise level instead of at ceil(gamma * T) (None: by gamma)
    branch_sigma: float | None = None
    omega: float = 0.2  # phased: randomness added to the shared noise (eq. 11)
    overlap: int = 1  # phased: frames each later segment shares with the previous one (cross-faded)
    carry: str = "motion"  # phased: how later segments continue segment 1 (CARRY_MODES, sample_phased)
    stride: int | None = None  # freenoise (default L // 4) and gen-l-video (default L // 4 in 4..8)
    chunk_frames: int | None = None  # freenoise: per-frame layers on at most this many frames at a time

    def __post_init__(self) -> None:
        if self.method not in LONG_METHODS:
            raise UserInputError(
                f"--long-method must be one of {', '.join(LONG_METHODS)}, got {self.method!r}"
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise UserInputError(f"--gamma must be in [0, 1], got {self.gamma}")
        if self.branch_sigma is not None and not self.branch_sigma > 0:
            raise UserInputError(f"--branch-sigma must be > 0, got {self.branch_sigma}")
        if self.omega < 0:
            raise UserInputError(f"--omega must be >= 0, got {self.omega}")
        if self.overlap < 0:
            raise UserInputError(f"--overlap must be >= 0, got {self.overlap}")
        if self.carry not in CARRY_MODES:
            raise UserInputError(f"--carry must be one of {', '.join(CARRY_MODES)}, got {self.carry!r}")
        if self.stride is not None and self.stride < 1:
            raise UserInputError(f"--stride must be >= 1, got {self.stride}")
        if self.chunk_frames is not None and self.chunk_frames < 1:
            raise UserInputError(f"--chunk-frames must be >= 1, got {self.chunk_frames}")

    def shared_frames(self, clip_len: int) -> int:
        """Phased's overlap as it runs: at most clip_len - 1 frames can be shared."""
        return min(self.overlap, clip_len - 1)

    def window_stride(self, clip_len: int) -> int:
        """FreeNoise: L // 4 (its paper: 16-frame windows, stride 4). Gen-L-Video: L // 4 kept within its
        paper's 4 to 8 frames, and at most L // 2 so windows overlap."""
        if self.stride:
            return self.stride
        if self.method == "freenoise":
            return max(1, clip_len // 4)
        return max(1, min(clip_len // 2, max(4, min(8, clip_len // 4))))

    def branch(self, sigmas: torch.Tensor | None, num_steps: int) -> int:
        """Phased's branch step M for this schedule."""
        return seg.branch_step(sigmas, num_steps, self.gamma, self.branch_sigma)


def sample_long(
    options: LongOptions,
    denoiser: Denoiser,
    noise: NoiseSource | torch.Tensor,
    sigmas: torch.Tensor,
    *,
    clip_len: int,
    generator: torch.Generator | None = None,
    condition_on: Callable[[torch.Tensor, int], dict[str, Any]] | None = None,
    follows_reference: bool | None = None,
    **cond: Any,
) -> Iterator[LatentChunk]:
    """Finished latent chunks of the whole video, in frame order (see :class:`LatentChunk`).

    ``condition_on`` is needed by direct (last latent
    frame and its index in the video -> conditioning image for the next clip). ``follows_reference``:
    whether the model's own motion follows the denoiser's ``reference`` (phased's ``carry="motion"``
    picks the reference carry then, else the model's own motion; None: whether a reference exists).
    """
    m = options.method
    if m == "phased":
        return sample_phased(
            denoiser, noise, sigmas, segment_len=clip_len, branch=options.branch(sigmas, len(sigmas) - 1),
            omega=options.omega, overlap=options.shared_frames(clip_len), carry=options.carry,
            follows_reference=follows_reference, generator=generator, **cond,
        )  # fmt: skip
    if m == "direct":
        if condition_on is None:
            raise ValueError("direct needs condition_on (last latent frame -> conditioning image)")
        return sample_direct(denoiser, noise, sigmas, segment_len=clip_len, condition_on=condition_on, **cond)
    stride = options.window_stride(clip_len)
    if m == "freenoise":
        return sample_freenoise(
            denoiser, noise, sigmas, segment_len=clip_len, stride=stride, chunk_frames=options.chunk_frames,
            generator=generator, **cond,
        )  # fmt: skip
    return sample_gen_l_video(denoiser, noise, sigmas, segment_len=clip_len, stride=stride, **cond)


@dataclass(frozen=True)
class Cost:
    denoiser_calls: int
    frame_passes: (
        int  # frames through the denoiser; x2 with classifier-free guidance = UNet frame-evaluations
    )


def expected_cost(
    options: LongOptions, num_frames: int, clip_len: int, num_steps: int, sigmas: torch.Tensor | None = None
) -> Cost:
    """Denoiser calls and frame passes ``options`` will make (``sigmas``: the schedule, needed for a
    branch by noise level)."""
    m = options.method
    if m == "phased":
        branch = options.branch(sigmas, num_steps)
        args = (num_frames, clip_len, num_steps, branch, options.shared_frames(clip_len))
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
