"""How a long video is cut into the pieces the UNet sees, and what the pieces yield.

A long-video sampler never returns the whole latent video at once: it yields :class:`LatentChunk`
objects in frame order, so the caller can decode and write them and then drop them. Memory then
stays flat in the video length for the segment-wise methods (``phased``, ``direct``).

The plans here are pure arithmetic, shared by the samplers and by the cost formulas the tests and
the benchmark check against the denoiser's own counters.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from stillmotion.errors import UserInputError


class LatentChunk(NamedTuple):
    """Finished latents of frames ``start .. start + latents.shape[1]`` of the video.

    ``join`` is 0 inside a sampled piece; n >= 1 when frame ``start`` begins a separately sampled segment:
    the n frame steps ``start - 1 -> start``, ..., ``start + n - 2 -> start + n - 1`` are the seam (1 for
    a cut, the cross-faded frames and the first own frame for phased's overlap). The join metrics read
    their seams from here.
    """

    start: int
    latents: torch.Tensor
    join: int


def check_length(num_frames: int, clip_len: int) -> None:
    if num_frames < 1:
        raise UserInputError(f"--frames must be at least 1, got {num_frames}")
    if clip_len < 1:
        raise UserInputError(f"the base clip length must be at least 1, got {clip_len}")


def reuse_steps(num_steps: int, gamma: float) -> int:
    """M = ceil(gamma * T): the steps later phased segments take over from segment 1 (paper eq. 9)."""
    if not 0.0 <= gamma <= 1.0:
        raise UserInputError(f"--gamma must be in [0, 1], got {gamma}")
    # The small tolerance keeps e.g. 0.8 * 25 = 20.000000000000004 from rounding up to 21.
    return min(num_steps, math.ceil(gamma * num_steps - 1e-9))


def branch_step(sigmas: torch.Tensor | None, num_steps: int, gamma: float, branch_sigma: float | None) -> int:
    """Phased's branch step M: ``ceil(gamma * T)`` (the paper), or with ``branch_sigma`` the first step
    whose noise level is at most that (the same point of the trajectory whatever the step count and
    schedule; T when no level is that low)."""
    if branch_sigma is None:
        return reuse_steps(num_steps, gamma)
    if sigmas is None:
        raise ValueError("a branch by noise level needs the schedule's sigmas")
    if not branch_sigma > 0:
        raise UserInputError(f"--branch-sigma must be > 0, got {branch_sigma}")
    below = (torch.as_tensor(sigmas[:num_steps]) <= branch_sigma).nonzero()
    return int(below[0]) if len(below) else num_steps


def direct_segments(num_frames: int, clip_len: int) -> list[tuple[int, int]]:
    """Direct's clips ``[a, b)``: K = ceil(N / L) clips of L frames one after another (the last may be
    shorter), the paper's cut (K = 5 for 125 frames of 25); each later clip is conditioned on the
    previous clip's last frame."""
    return phased_segments(num_frames, clip_len, 0)


def phased_segments(num_frames: int, clip_len: int, overlap: int) -> list[tuple[int, int]]:
    """Segments ``[a, b)`` of at most ``clip_len`` frames; each later one starts ``overlap`` frames
    before the previous one ends (those frames are its anchors, see ``sample_phased``).

    K = 1 + ceil((N - L) / (L - overlap)) segments for N > L; the last one may be shorter than L.
    """
    check_length(num_frames, clip_len)
    if not 0 <= overlap < clip_len:
        raise UserInputError(
            f"--overlap must be in [0, {clip_len - 1}] for {clip_len}-frame clips, got {overlap}"
        )
    segments = [(0, min(clip_len, num_frames))]
    while segments[-1][1] < num_frames:
        a = segments[-1][1] - overlap
        segments.append((a, min(a + clip_len, num_frames)))
    return segments


def sliding_windows(num_frames: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Windows ``[a, a + window)`` every ``stride`` frames, the last one aligned to the video's end.

    Every frame is covered; with ``num_frames <= window`` there is one window over all frames.
    """
    check_length(num_frames, window)
    if stride < 1:
        raise UserInputError(f"--stride must be at least 1, got {stride}")
    if num_frames <= window:
        return [(0, num_frames)]
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return [(a, a + window) for a in starts]


# -- cost formulas: frames passed through the denoiser (multiply by the guidance batch factor, e.g. 2 for
# classifier-free guidance, to get UNet frame-evaluations) ---------------------------------------------------


def phased_frame_evaluations(num_frames: int, clip_len: int, num_steps: int, m: int, overlap: int) -> int:
    """L1 * T + sum over later segments k of L_k * (T - M), M the branch step (:func:`branch_step`)."""
    segs = phased_segments(num_frames, clip_len, overlap)
    first = (segs[0][1] - segs[0][0]) * num_steps
    return first + sum(b - a for a, b in segs[1:]) * (num_steps - m)


def phased_denoiser_calls(num_frames: int, clip_len: int, num_steps: int, m: int, overlap: int) -> int:
    """T + (K - 1) * (T - M)."""
    k = len(phased_segments(num_frames, clip_len, overlap))
    return num_steps + (k - 1) * (num_steps - m)


def direct_frame_evaluations(num_frames: int, clip_len: int, num_steps: int) -> int:
    """T * N: every clip is denoised fully, the clips tile the video."""
    return num_steps * sum(b - a for a, b in direct_segments(num_frames, clip_len))


def direct_denoiser_calls(num_frames: int, clip_len: int, num_steps: int) -> int:
    """K * T with K = ceil(N / L) clips."""
    return len(direct_segments(num_frames, clip_len)) * num_steps


def freenoise_frame_evaluations(num_frames: int, clip_len: int, num_steps: int) -> int:
    """N * T: one pass over all frames per step (only the temporal attention is windowed, about L / stride
    times per frame, not counted as frame passes)."""
    check_length(num_frames, clip_len)
    return num_frames * num_steps


def gen_l_video_frame_evaluations(num_frames: int, clip_len: int, num_steps: int, stride: int) -> int:
    """T * sum of window lengths (each frame is denoised about L / stride times per step)."""
    return num_steps * sum(b - a for a, b in sliding_windows(num_frames, clip_len, stride))


def gen_l_video_denoiser_calls(num_frames: int, clip_len: int, num_steps: int, stride: int) -> int:
    """T * number of windows."""
    return num_steps * len(sliding_windows(num_frames, clip_len, stride))
