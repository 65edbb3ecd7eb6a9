"""Long videos from a prepared pipeline: a long-video sampler run on the pipeline's denoiser, its finished
chunks decoded as they come (only one segment's latents and one decode chunk of frames alive at a time).

This is the engines' orchestration around ``stillmotion.sampling.long.sample_long``: it calls the
pipeline's decoder and the denoiser's conditioning encoders, which the samplers never see.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch

from stillmotion.diffusion.prepared import Prepared
from stillmotion.progress import progress_bar
from stillmotion.sampling import segments as seg
from stillmotion.sampling.base import Denoiser
from stillmotion.sampling.frame_noise import FrameNoise
from stillmotion.sampling.long import LongOptions, expected_cost, sample_long


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (Linux), else None: ``malloc_trim`` is glibc's."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library already loaded into the process
        if not hasattr(libc, "gnu_get_libc_version"):  # only glibc has it (musl: no malloc_trim)
            return None
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def release_free_heap() -> None:
    """Give the heap's free pages back to the system (glibc ``malloc_trim(0)``; a no-op elsewhere)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc's malloc.h)
# Blocks of this size and more get their own mapping once a model runs on the CPU (0: glibc's own rule).
# 4 MiB: at 1 MiB the bundled model's 64-frame video took 1.44x the time of glibc's own rule (every
# activation faulted in afresh), at 4 MiB 1.06x, memory still flat in the video's length
# (benchmarks/bench_heap.py, benchmarks/bench_wan.py; docs/benchmarks.md#wan-long-videos-tiny-components).
HEAP_MMAP_THRESHOLD = 4 << 20
_steady = {"set": False}
_steady_lock = threading.Lock()


def steady_heap() -> bool:
    """From now on in this process, every block of :data:`HEAP_MMAP_THRESHOLD` bytes or more is a mapping of
    its own, returned to the system when freed (glibc ``mallopt(M_MMAP_THRESHOLD)``), and free memory at the
    top of the heap beyond twice that goes back too (``M_TRIM_THRESHOLD``, glibc's own ratio). Idempotent;
    a no-op (False) off glibc, at 0, or when ``MALLOC_MMAP_THRESHOLD_`` is set (the user's choice stands).

    Why: glibc raises that threshold to the size of every mapped block freed, so once the Wan decoder's
    20 MiB convolution buffers are freed, every smaller block lands in the heap, where freed blocks stay
    resident below the live ones and are reused again and again: a longer video touched more of them and
    reached a higher water mark while holding no more (``benchmarks/bench_wan.py --heap no-trim``). Setting
    it turns that rule off. It is set once, before a CPU model loads, and not undone: blocks the heap
    already holds serve later requests of any size (a threshold set only for the video would leave the
    load's and the warm-up's freed blocks in use), and glibc cannot turn its rule back on."""
    libc = _glibc()
    if libc is None or HEAP_MMAP_THRESHOLD <= 0 or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    with _steady_lock:
        if not _steady["set"]:
            _steady["set"] = bool(
                libc.mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)
                and libc.mallopt(_M_TRIM_THRESHOLD, 2 * HEAP_MMAP_THRESHOLD)
            )
    return _steady["set"]


class _CountingProgress:
    """Wraps a denoiser; advances a progress bar by one per call (the unit every method shares) and
    tells ``on_call(done, total)`` when given."""

    def __init__(
        self,
        denoiser: Denoiser,
        bar: Any,
        total: int,
        on_call: Callable[[int, int], None] | None = None,
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


def follows_reference(den: Any) -> bool:
    """Whether the model's own motion follows the denoiser's motion reference (the input carried along
    the field), which decides phased's default carry: warp-guided control holds it to the reference, a
    warped-conditioning model is conditioned on it, trained motion modules are steered by the field it is
    warped along. A model that gets no motion input (stock SVD, untrained motion modules, no field) does
    not: its later segments continue its own motion."""
    from stillmotion.diffusion.warp_guidance import WarpGuidedDenoiser

    if isinstance(den, WarpGuidedDenoiser):
        return True
    if getattr(den, "frame_latents", None) is not None:
        return True
    return getattr(den, "flows", None) is not None and getattr(den, "motion_encoder", None) is not None


def stream_long_video(
    pipe: Any,
    prepared: Prepared,
    options: LongOptions,
    *,
    steps: int,
    seed: int,
    clip_len: int | None = None,
    decode_chunk_size: int | None = None,
    progress: bool = False,
    on_call: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[Any, bool]]:
    """Frames of a prepared video (:class:`~stillmotion.diffusion.prepared.Prepared`, from the pipeline's
    ``prepare``), ``prepared.denoiser.num_frames`` latent frames long.

    Yields ``(frames, join)`` with frames float32 ``[B, n, H, W, 3]`` in [0, 1] in order (``join``: 0, or
    the seam's frame steps when the first of them starts a separately sampled segment, see
    :class:`LatentChunk`). The starting noise is :class:`FrameNoise` of
    ``seed`` (made per frame, on demand); the samplers' own random choices come from a generator of the
    same seed. ``direct`` decodes each clip's last latent frame and re-encodes it (image latent with SVD's
    noise augmentation, or for a warped-conditioning model the frame warped along the field and encoded
    per frame, and CLIP embedding) as the next clip's conditioning; ``freenoise`` window-fuses
    the pipeline UNet's temporal attention. ``on_call(done, total)`` follows every denoiser call. A pipeline
    with ``stream_decoder(prepared)`` (Wan's causal video VAE) decodes all chunks through one decoder state,
    one latent frame at a time on the CPU (``decode_chunk_size``: frames per decode of a per-frame VAE,
    SVD's). On the CPU the video streams under :func:`steady_heap` (large blocks freed go back to the system
    at once, so the resident set follows what is alive), and the heap's free pages go back when it ends.
    """
    den = prepared.denoiser
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
        # [B, 1, H, W, 3] in [0, 1], still pixels pasted
        frames = next(pipe.decode(prepared, last[:, None], 1))
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
    # the allocator settings are for the CPU's heap: on a GPU the activations live in torch's own cache
    on_cpu = torch.device(den.device).type == "cpu"
    total = expected_cost(options, den.num_frames, clip, len(sigmas) - 1, sigmas).denoiser_calls
    if on_cpu:
        steady_heap()  # the engines set it before the model loads; here for a pipeline loaded elsewhere
    with progress_bar(total=total, desc=f"{options.method} sampling", enabled=progress, unit="call") as bar:
        chunks = sample_long(
            options,
            _CountingProgress(den, bar, total, on_call),
            noise,
            sigmas,
            clip_len=clip,
            generator=generator,
            condition_on=condition_on,
            follows_reference=follows_reference(den),
        )
        # A causal video VAE (Wan's: 4 video frames per latent frame) decodes the chunks as one stream, its
        # state carried from chunk to chunk; a per-frame VAE (SVD's) decodes each chunk on its own.
        stream = pipe.stream_decoder(prepared) if hasattr(pipe, "stream_decoder") else None
        step = decode_chunk_size or clip
        for chunk in chunks:
            join = chunk.join
            if stream is None:
                parts = pipe.decode(prepared, chunk.latents, step)
            elif on_cpu:
                # one latent frame at a time (the causal decoder gives the same frames however the latents
                # are cut): a chunk's frames are never all alive in float32
                n = chunk.latents.shape[1]
                parts = (stream.push(chunk.latents[:, i : i + 1]) for i in range(n))
            else:
                parts = iter([stream.push(chunk.latents)])
            for frames in parts:
                if frames.shape[1] == 0:
                    continue
                yield frames, join
                join = 0
    if on_cpu:
        release_free_heap()  # the video's freed small blocks too (a server process goes on running)
