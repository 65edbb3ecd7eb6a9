"""What running either diffusion backbone (SVD through ``engines.diffusion``, Wan through ``engines.wan``)
shares: the device and dtype asked for, the long-video options, per-step progress and frames out.

Imported only when a backbone runs (it loads torch and the samplers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from stillmotion.diffusion.prepared import Prepared
from stillmotion.diffusion.warp_guidance import WarpGuidance, WarpGuidedDenoiser, warp_guided
from stillmotion.engines.long_video import follows_reference
from stillmotion.engines.options import DiffusionOptions
from stillmotion.errors import UserInputError
from stillmotion.progress import progress_bar
from stillmotion.sampling.long import LongOptions

logger = logging.getLogger("stillmotion.diffusion")
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def resolve_device(device: str) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"--device {device}: CUDA is not available on this machine (use cpu or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserInputError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    return device


def resolve_dtype(dtype: str, device: str):
    if dtype in (None, "auto"):
        return torch.float16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise UserInputError(f"--dtype must be auto, fp32, fp16 or bf16, got {dtype!r}")
    return getattr(torch, DTYPES[dtype])


def cached_load(cache: dict, key: tuple, load: Callable[[], Any]) -> Any:
    """``cache[key]``, else ``load()`` in its place: only the last model is kept (they are gigabytes)."""
    if key in cache:
        return cache[key]
    cache.clear()
    cache[key] = load()
    return cache[key]


def on_device(pipe: Any, device: str, offload: bool) -> Any:
    """A loaded pipeline on ``device`` (``offload``: model CPU offload on CUDA; no effect on the CPU, said
    so), its progress bars off (the engines show their own)."""
    if offload and device.startswith("cuda"):
        pipe.enable_model_cpu_offload(device=device)
    else:
        if offload:
            logger.warning("--offload has no effect on the CPU; ignoring it")
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def with_control(
    pipe: Any, prepared: Prepared, mode: str, knobs: WarpGuidance, loop: bool
) -> tuple[Prepared, WarpGuidedDenoiser | None]:
    """(the video to sample, its warp-guided denoiser or None): warp-guided control wraps the denoiser when
    ``mode`` asks for it and the video has a field to follow."""
    guided = warp_guided(pipe, prepared, knobs, loop=loop) if mode == "warp-guided" else None
    return (prepared, None) if guided is None else (guided, guided.denoiser)


def long_options(o: DiffusionOptions, **more: Any) -> LongOptions:
    """The long-video sampler options of ``o`` (checked here, before any work)."""
    return LongOptions(method=o.long_method or "phased", gamma=o.gamma, omega=o.omega,
                       branch_sigma=o.branch_sigma, carry=o.carry, stride=o.stride, **more,
                       **({} if o.overlap is None else {"overlap": int(o.overlap)}))  # fmt: skip


# Phased joins cross-fade this many video frames where a later segment does not simply follow the motion
# reference: under warp-guided control its last free steps make their own fine texture, which a single
# anchor frame shows as a step in appearance (125 frames on the plain model: join smoothness 1.44 with one
# frame, 1.14 with five); a model continuing its own motion (the own carry: no motion input) carries the
# previous end in as an offset, which over one anchor frame reads as the motion stopping at the join
# (plain model, seeds 0 / 1 / 2: join motion 0.90 / 1.02 / 0.93 with five, 0.55 / 0.60 / 0.85 with one).
# docs/benchmarks.md, "Plain model + warp-guided, 125 frames" and "Long videos: a model continuing its
# own motion".
CROSS_FADE_FRAMES = 5


def motion_carry(den: Any, guided: Any) -> str:
    """What ``--carry motion`` runs as on this denoiser: ``reference`` under warp-guided control (the
    video is held to the reference, so segment 1's deviation from it is small and replaying it costs
    nothing), ``appearance`` for a model steered by its own trained motion input (warped conditioning,
    motion modules), whose deviation from the reference is its own jitter, steps back included, which
    ``reference`` would replay in every segment, and ``own`` for a model that gets no motion input."""
    if guided is not None:
        return "reference"
    return "appearance" if follows_reference(den) else "own"


def phased_options(
    options: LongOptions, o: DiffusionOptions, den: Any, guided: Any, frames_per_latent: int = 1
) -> LongOptions:
    """``options`` with phased's carry and overlap as they run. The carry: the user's, with ``motion``
    resolved by :func:`motion_carry`. The overlap: the user's ``--overlap``, else
    :data:`CROSS_FADE_FRAMES` video frames (in the backbone's latent frames, ``frames_per_latent`` video
    frames each) for warp-guided control and for the own carry, else the sampler's default (one anchor
    frame)."""
    carry = motion_carry(den, guided) if options.carry == "motion" else options.carry
    options = dataclasses.replace(options, carry=carry)
    if o.overlap is not None or (guided is None and carry != "own"):
        return options
    return dataclasses.replace(options, overlap=math.ceil(CROSS_FADE_FRAMES / frames_per_latent))


def fit_sequence(motion: np.ndarray, frames: int) -> np.ndarray:
    """A field sequence steers frame step t by field t: cut to the video's steps, the last one repeated."""
    need = max(1, frames - 1)
    motion = motion[:need]
    if len(motion) < need:
        motion = np.concatenate([motion, np.repeat(motion[-1:], need - len(motion), 0)])
    return motion


@contextlib.contextmanager
def step_progress(
    total: int, desc: str, enabled: bool, on_step: Callable[[int, int], None] | None
) -> Iterator[Callable[[int, Any, Any], None]]:
    """A sampler callback advancing a progress bar and telling ``on_step(done, total)`` after each step."""
    with progress_bar(total=total, desc=desc, enabled=enabled, unit="step") as bar:

        def step_done(i: int, x_: Any, x0: Any) -> None:
            bar.update(1)
            if on_step is not None:
                on_step(i + 1, total)

        yield step_done


def to_uint8(frames: np.ndarray) -> Iterator[np.ndarray]:
    """Float frames ``[1, n, H, W, 3]`` in [0, 1] -> uint8 (H, W, 3) frames, one at a time."""
    for frame in frames[0]:
        yield (frame * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
