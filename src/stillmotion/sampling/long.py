"""One entry point for the long-video samplers, what each costs, and the streaming decode around them.

``sample_long(method, ...)`` dispatches to ``sample_phased`` (the paper; the default), ``sample_direct``,
``sample_freenoise`` or ``sample_gen_l_video`` with the options each understands, and
``expected_cost(method, ...)`` gives the denoiser calls and frame passes it will make (the formulas in
each sampler's docstring), which the engine uses for its progress bar and the tests check against the
denoiser's counters. ``stream_long_video(pipe, den, ...)`` runs a sampler on a prepared
StillMotionPipeline denoiser and decodes the finished chunks as they come, so only one segment's latents
and one decode chunk of frames are alive at a time.
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


CARRY_MODES = ("motion", "copy")


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
    carry: str = "motion"  # phased: later segments start from segment 1 moved along the motion, or "copy"
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
    **cond: Any,
) -> Iterator[LatentChunk]:
    """Finished latent chunks of the whole video, in frame order (see :class:`LatentChunk`).

    ``condition_on`` is needed by direct (last latent
    frame and its index in the video -> conditioning image for the next clip).
    """
    m = options.method
    if m == "phased":
        return sample_phased(
            denoiser, noise, sigmas, segment_len=clip_len, branch=options.branch(sigmas, len(sigmas) - 1),
            omega=options.omega, overlap=options.shared_frames(clip_len), carry=options.carry,
            generator=generator, **cond,
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


class _CountingProgress:
    """Wraps a denoiser; advances a progress bar by one per call (the unit every method shares) and
    tells ``on_call(done, total)`` when given."""

    def __init__(
        self, denoiser: Denoiser, bar: Any, total: int, on_call: Callable[[int, int], None] | None = None
    ) -> None:
        self.denoiser, self.bar, self.total, self.on_call = denoiser, bar, total, on_call
        self.done = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        out = self.denoiser(x, sigma, **cond)
        self.done += 1
        self.bar.update(1)
        if self.on_call is not None:
            self.on_call(self.done, self.total)
        return out

    def __getattr__(self, name: str) -> Any:
        # Optional hooks of the wrapped denoiser (e.g. ``reference`` for sample_phased) stay visible.
        if name == "denoiser":  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        return getattr(self.denoiser, name)


def stream_long_video(
    pipe: Any,
    den: Any,
    options: LongOptions,
    *,
    steps: int,
    seed: int,
    clip_len: int | None = None,
    decode_chunk_size: int | None = None,
    progress: bool = False,
    on_call: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[Any, bool]]:
    """Frames of a ``den.num_frames``-long video from a StillMotionPipeline and its prepared denoiser.

    Yields ``(frames, join)`` with frames float32 ``[B, n, H, W, 3]`` in [0, 1] in order (``join``: 0, or
    the seam's frame steps when the first of them starts a separately sampled segment, see
    :class:`LatentChunk`). The starting noise is :class:`FrameNoise` of
    ``seed`` (made per frame, on demand); the samplers' own random choices come from a generator of the
    same seed. ``direct`` decodes each clip's last latent frame and re-encodes it (image latent with SVD's
    noise augmentation, or for a warped-conditioning model the frame warped along the field and encoded
    per frame, and CLIP embedding) as the next clip's conditioning; ``freenoise`` window-fuses
    the pipeline UNet's temporal attention. ``on_call(done, total)`` follows every denoiser call. A pipeline
    with ``stream_decoder(den)`` (Wan's causal video VAE) decodes all chunks through one decoder state.
    """
    from stillmotion.progress import progress_bar
    from stillmotion.sampling.frame_noise import FrameNoise

    clip = int(clip_len or den.clip_frames)
    sigmas = den.set_schedule(steps)  # a warp-guided denoiser's starts below the top (SDEdit)
    top = float(getattr(den, "full_sigmas", sigmas)[0])
    # the samplers start from noise * sigma_0; SVD's scheduler from noise * init_noise_sigma (a hair more
    # with "leading" spacing): scaled so that a long video's first clip is the short video of that seed
    noise = FrameNoise(
        den.num_frames,
        den.latent_shape(1)[2:],
        seed=seed,
        batch=den.batch_size,
        device=den.device,
        dtype=torch.float32,
        scale=float(den.init_noise_sigma) / top,
    )
    start_noise = getattr(den, "start_noise", None)
    if start_noise is not None:  # warp-guided: the samplers' noise * sigmas[0] is the noised reference
        noise = start_noise(noise)
    generator = torch.Generator().manual_seed(seed)
    aug_generator = torch.Generator(device=den.device).manual_seed(seed + 1)

    def condition_on(last: torch.Tensor, index: int) -> dict[str, Any]:
        frames = next(pipe.decode(den, last[:, None], 1))  # [B, 1, H, W, 3] in [0, 1], still pixels pasted
        pixels = torch.from_numpy(frames[:, 0]).permute(0, 3, 1, 2).to(den.device) * 2 - 1
        cond = {"image_embeds": den.encode_condition_embeds(pixels)}
        if getattr(den, "frame_latents", None) is not None:
            # a warped-conditioning model: the last frame carried on along the field (from frame
            # ``index`` on, for a per-frame field), as the input was; the next clip starts one step later
            last_px = (frames[0, 0] * 255 + 0.5).clip(0, 255).astype("uint8")
            seed_k = int(torch.randint(0, 2**62, (1,), generator=aug_generator, device=aug_generator.device))
            moved = den.frame_latents.starting_from(last_px, clip + 1, seed_k, index)
            cond["image"] = moved.window(1, clip + 1)
        else:
            cond["image"] = den.encode_condition_image(pixels, aug_generator)
        return cond

    if options.method == "gen-l-video" and hasattr(den, "keep_windows"):
        # every step visits every window: keep their conditioning instead of remaking it each step
        den.keep_windows(len(seg.sliding_windows(den.num_frames, clip, options.window_stride(clip))))
    total = expected_cost(options, den.num_frames, clip, len(sigmas) - 1, sigmas).denoiser_calls
    with progress_bar(total=total, desc=f"{options.method} sampling", enabled=progress, unit="call") as bar:
        chunks = sample_long(
            options,
            _CountingProgress(den, bar, total, on_call),
            noise,
            sigmas,
            clip_len=clip,
            generator=generator,
            condition_on=condition_on,
        )
        # A causal video VAE (Wan's: 4 video frames per latent frame) decodes the chunks as one stream, its
        # state carried from chunk to chunk; a per-frame VAE (SVD's) decodes each chunk on its own.
        stream = pipe.stream_decoder(den) if hasattr(pipe, "stream_decoder") else None
        step = decode_chunk_size or clip
        for chunk in chunks:
            join = chunk.join
            if stream is None:
                parts = pipe.decode(den, chunk.latents, step)
            else:
                n = chunk.latents.shape[1]
                parts = (stream.push(chunk.latents[:, i : i + step]) for i in range(0, n, step))
            for frames in parts:
                if frames.shape[1] == 0:
                    continue
                yield frames, join
                join = 0
