"""Warp-guided control: arrows that steer an image-to-video model without training (dual-clock denoising).

The method is Time-to-Move's (Singer et al., ICLR 2026, arXiv 2511.08633): a crude animation of the
photo, the *reference*, is the motion cue. Sampling starts SDEdit-style from the reference noised to a
middle level instead of from pure noise, and the region the user animated is held to the noised
reference for more steps than the rest of the frame ("dual clock"): the rest of the frame starts
denoising freely at the start level, the moving region only after the hold. Here the reference is the
warp engine's animation of the photo along the motion field (arrows, trajectories, a given field or a
per-frame flow sequence; mask respected; a loop or forward motion), which follows the requested motion
exactly at any length.

How it is built (designed here): the hold is a denoiser wrapper, so every sampler over the project's
interface ``denoiser(x, sigma, frames=..., **cond) -> x0`` gets it unchanged. While the hold lasts,
the wrapper replaces x0 by the reference latents r inside the hold region. With the deterministic
Euler step ``x' = x + (x - x0) / s * (s' - s)``, a state ``x = r + s * n`` there goes to
``r + s' * n``: the held region stays exactly the reference noised to the current level, with the
noise the state carries, whatever sampler runs (a window method, a segment carried over by phased
with its rescheduled noise). The frame range of each call (``frames=slice(a, b)``) picks the window's
part of the reference, and the wrapper's ``reference(start, stop)`` hook (the one phased uses to carry
segment 1's state to later segments) returns the reference, so each later segment starts from its own
part of it and the motion continues across joins. The start is a noise source (``ReferenceStart``)
whose frames are ``noise + r / sigma_start``, so a sampler's own ``noise * sigma_start`` is the
reference noised to the start level.

Knobs (plain words, both shares in [0, 1]):

- ``freedom``: how free the rest of the frame is: the share of the denoising schedule that is run.
  Sampling starts at step ``round((1 - freedom) * T)`` of T; 1 starts from pure noise (plain
  image-to-video where nothing is held), small values keep the reference's look (plain SDEdit).
- ``follow``: how closely the motion follows the arrows: the share of the steps that are run during
  which the moving region is held to the reference. 0 holds nothing (plain SDEdit from the start
  level), 1 holds it to the end (the moving region is then exactly the warp).

The hold region is where the reference moves: inside the mask, the pixels whose requested speed is at
least :data:`HOLD_SPEED_SHARE` of the peak (the arrow region), on the latent grid every cell that holds
one of its pixels. Still regions (outside the mask) are held to the photo by the denoiser itself, as always.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stillmotion.diffusion.prepared import Prepared
from stillmotion.errors import UserInputError
from stillmotion.sampling.parameterization import EDM, parameterization_of

logger = logging.getLogger("stillmotion.diffusion")

CONTROL_MODES = ("auto", "trained", "warp-guided", "none")
# Measured defaults (docs/diffusion-engine.md, benchmarks/bench_control_knobs.py).
DEFAULT_FOLLOW = 0.75
DEFAULT_FREEDOM = 0.45
# Pixels whose requested speed is at least this share of the peak speed are held (the arrow region).
HOLD_SPEED_SHARE = 0.25


def resolve_control(control: str, motion_trained: bool) -> str:
    """The control mode that runs: ``auto`` is ``trained`` for a model whose motion modules are trained,
    else ``warp-guided``."""
    if control not in CONTROL_MODES:
        raise UserInputError(f"--control must be one of {', '.join(CONTROL_MODES)}, got {control!r}")
    if control == "auto":
        return "trained" if motion_trained else "warp-guided"
    return control


@dataclass(frozen=True)
class WarpGuidance:
    """The two knobs of warp-guided control (see the module docstring)."""

    follow: float = DEFAULT_FOLLOW
    freedom: float = DEFAULT_FREEDOM

    def __post_init__(self) -> None:
        if not (isinstance(self.follow, int | float) and math.isfinite(self.follow)
                and 0 <= self.follow <= 1):  # fmt: skip
            raise UserInputError(f"--follow must be a number in [0, 1], got {self.follow!r}")
        if not (isinstance(self.freedom, int | float) and math.isfinite(self.freedom)
                and 0 < self.freedom <= 1):  # fmt: skip
            raise UserInputError(f"--freedom must be a number in (0, 1], got {self.freedom!r}")

    def start_step(self, steps: int) -> int:
        """The step of ``steps`` at which sampling starts (at least one step is run)."""
        return min(steps - 1, int(round((1 - self.freedom) * steps)))

    def hold_end(self, steps: int) -> int:
        """The first step at which the moving region is denoised freely (``steps``: held to the end)."""
        start = self.start_step(steps)
        return start + int(round(self.follow * (steps - start)))


def hold_region(field: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """bool (H, W): the pixels the dual clock holds: requested speed >= HOLD_SPEED_SHARE of its peak, in
    the mask. A per-frame sequence (F, H, W, 2) counts each pixel's fastest step."""
    speed = np.hypot(field[..., 0], field[..., 1])
    if speed.ndim == 3:
        speed = speed.max(axis=0)
    if mask is not None:
        speed = np.where(mask, speed, 0.0)
    peak = float(speed.max()) if speed.size else 0.0
    if peak <= 0:
        return np.zeros(speed.shape, bool)
    return speed >= HOLD_SPEED_SHARE * peak


def latent_mask(region: np.ndarray, latent_size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """bool (H, W) -> float32 ``[1, 1, 1, h, w]``: 1 for every latent cell that holds a pixel of the region.

    A cell counts whole (max, not the area share): the reference is right everywhere (its still pixels
    are the photo's), while a half-held cell lets the model slow a thin moving region down (measured)."""
    px = torch.from_numpy(region.astype(np.float32))[None, None]
    h, w = latent_size
    cells = F.adaptive_max_pool2d(px, (h, w)) if px.shape[-2] % h or px.shape[-1] % w else F.max_pool2d(
        px, (px.shape[-2] // h, px.shape[-1] // w)
    )
    return cells[None].to(device)


class ReferenceLatents:
    """The reference video's latents (scaled, float32 ``[B, f, C, h, w]``) of any window, made on demand.

    The warp runs forward as windows ask for frames and only recent frames are kept
    (:class:`~stillmotion.diffusion.warp_condition.WarpedCondition`, the same per-window machinery the
    warped conditioning uses), so memory stays flat in the video's length. Frames are encoded without
    noise augmentation: this is the clean video the held region denoises to.
    """

    def __init__(
        self, image: np.ndarray, field: np.ndarray, frames: int, mask: np.ndarray | None,
        encode: Callable[[torch.Tensor], torch.Tensor], *, scale: float, loop: bool, batch: int = 1,
        cache_size: int = 4, supersample: int | None = None,
    ) -> None:  # fmt: skip
        # lazy: numba takes about a second to import (start-up); only this path needs it
        from stillmotion.diffusion.warp_condition import REFERENCE_SUPERSAMPLE, WarpedCondition

        loop = bool(loop) and field.ndim == 3  # a flow sequence animates forward only
        self.loop = loop
        self.scale = float(scale)
        self.batch = int(batch)
        self.frames_source = WarpedCondition(
            image, field, frames, mask, encode, noise_aug_strength=0.0, seed=0, cache_size=cache_size,
            loop=loop, supersample=REFERENCE_SUPERSAMPLE if supersample is None else supersample,
        )  # fmt: skip

    @property
    def cache_size(self) -> int:
        return self.frames_source.cache_size

    @cache_size.setter
    def cache_size(self, value: int) -> None:
        self.frames_source.cache_size = int(value)

    def window(self, start: int, stop: int) -> torch.Tensor:
        z = self.frames_source.window(start, stop).float() * self.scale
        return z.expand(self.batch, *z.shape[1:]) if z.shape[0] != self.batch else z


class ReferenceStart:
    """A noise source whose frames are ``noise + weight * r / sigma``: a sampler's ``frames * sigma`` is then
    the reference r noised to ``sigma`` (weight 1), or plain noise where the weight is 0.

    ``pure`` and ``offset`` let a sampler that reshuffles its noise (FreeNoise) shuffle the noise alone and
    add the reference after."""

    def __init__(
        self, noise: Any, reference: Any, sigma: float, weight: torch.Tensor | float,
        parameterization: Any = EDM,
    ) -> None:  # fmt: skip
        self.pure = noise
        self.parameterization = parameterization
        self.num_frames = noise.num_frames
        self.reference = reference
        self.sigma = float(sigma)
        self.weight = weight

    def offset(self, start: int, stop: int) -> torch.Tensor:
        r = self.reference.window(start, stop)
        w = self.weight.to(r.device) if isinstance(self.weight, torch.Tensor) else self.weight
        # the clean part of the start state over sigma: r / sigma (EDM), (1 - t) r / t (flow matching)
        return w * self.parameterization.signal(r, self.sigma) / self.sigma

    def frames(self, start: int, stop: int) -> torch.Tensor:
        n = self.pure.frames(start, stop)
        return n + self.offset(start, stop).to(n.device, n.dtype)


class WarpGuidedDenoiser:
    """Wraps a denoiser: dual-clock hold of the moving region on the warp reference (module docstring).

    Everything else (conditioning, guidance, counters, ``num_frames`` ...) is the wrapped denoiser's. Call
    :meth:`set_schedule` first: it returns the sigmas from the start level on."""

    def __init__(
        self, denoiser: Any, reference: ReferenceLatents, hold: torch.Tensor, guidance: WarpGuidance
    ) -> None:
        self.denoiser = denoiser
        self.ref = reference
        self.hold = hold  # [1, 1, 1, h, w] in [0, 1]
        self.guidance = guidance
        self.full_sigmas: torch.Tensor | None = None
        self.start = 0
        self.hold_until: float | None = None  # hold while sigma > this; None: no hold
        self.held_calls = 0

    def __getattr__(self, name: str) -> Any:
        if name == "denoiser":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.denoiser, name)

    # ---- schedule and start ------------------------------------------------------------------------

    def set_schedule(self, steps: int) -> torch.Tensor:
        """The wrapped denoiser's schedule for ``steps`` steps, from the start step on (``steps - start + 1``
        values); the hold lasts while sigma is above the sigma of the hold's end step."""
        sigmas = self.denoiser.set_schedule(steps)
        g = self.guidance
        self.full_sigmas = sigmas
        self.start = g.start_step(steps)
        end = g.hold_end(steps)
        self.hold_until = float(sigmas[end]) if end > self.start else None
        return sigmas[self.start :]

    @property
    def holding(self) -> bool:
        return self.hold_until is not None and float(self.hold.max()) > 0

    def _start_weight(self) -> torch.Tensor | float:
        # From the top of the schedule the free region starts from plain noise (plain image-to-video);
        # from a lower level the whole frame starts from the noised reference (SDEdit).
        if self.start > 0:
            return 1.0
        return self.hold if self.holding else 0.0

    def start_noise(self, noise: Any) -> Any:
        """The samplers' noise source -> one whose ``frames * sigma_start`` is the start state (the source
        itself where nothing starts from the reference: plain image-to-video)."""
        if self.full_sigmas is None:
            raise RuntimeError("call set_schedule(steps) before start_noise")
        weight = self._start_weight()
        if isinstance(weight, float) and weight == 0.0:
            return noise
        return ReferenceStart(noise, self.ref, float(self.full_sigmas[self.start]), weight,
                              parameterization_of(self.denoiser))

    def start_latents(self, x: torch.Tensor, frames: slice | None = None) -> torch.Tensor:
        """A clip's plain start ``unit noise * init_noise_sigma`` -> the warp-guided start: the reference
        noised to the start level with the same noise (only the hold region from the top of the
        schedule)."""
        if self.full_sigmas is None:
            raise RuntimeError("call set_schedule(steps) before start_latents")
        w = self._start_weight()
        if isinstance(w, float) and w == 0.0:
            return x
        a = 0 if frames is None or frames.start is None else int(frames.start)
        r = self.ref.window(a, a + x.shape[1]).to(x.device, x.dtype)
        unit = x / float(self.denoiser.init_noise_sigma)
        guided = parameterization_of(self.denoiser).noised(r, unit, float(self.full_sigmas[self.start]))
        w = w.to(x.device, x.dtype) if isinstance(w, torch.Tensor) else w
        return w * guided + (1 - w) * x

    # ---- the hooks samplers use ---------------------------------------------------------------------

    def reference(self, start: int, stop: int) -> torch.Tensor:
        """The reference latents of frames ``start:stop``: phased carries segment 1's state relative to
        them, so a later segment starts from its own part of the reference."""
        return self.ref.window(start, stop)

    def keep_windows(self, count: int) -> None:
        keep = getattr(self.denoiser, "keep_windows", None)
        if keep is not None:
            keep(count)
        self.ref.cache_size = max(self.ref.cache_size, int(count))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, frames: slice | None = None,
                 **cond: Any) -> torch.Tensor:  # fmt: skip
        x0 = self.denoiser(x, sigma, frames=frames, **cond)
        if self.hold_until is None or float(sigma) <= self.hold_until:
            return x0
        a = 0 if frames is None or frames.start is None else int(frames.start)
        r = self.ref.window(a, a + x.shape[1]).to(x0.device, x0.dtype)
        m = self.hold.to(x0.device, x0.dtype)
        self.held_calls += 1
        return x0 + m * (r - x0)


def warp_guided(pipe: Any, prepared: Prepared, guidance: WarpGuidance, *, loop: bool) -> Prepared | None:
    """A prepared video (:class:`~stillmotion.diffusion.prepared.Prepared`) -> the same video whose denoiser
    is a :class:`WarpGuidedDenoiser` around its own, or None when it has no motion field to follow (nothing
    moves)."""
    field = prepared.field
    if field is None:
        return None
    den = prepared.denoiser
    region = hold_region(field, prepared.mask)
    make_reference = getattr(pipe, "warp_reference", None)
    if make_reference is not None:  # a backbone with its own latents (Wan: a video VAE, latent frames)
        hold = latent_mask(region, den.latent_size, den.device)
        guided = WarpGuidedDenoiser(den, make_reference(prepared, loop=loop), hold, guidance)
        return prepared.with_denoiser(guided)
    scale = float(pipe.vae.config.scaling_factor)
    device = den.device

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        return pipe.encode_latents(pixels.to(device)).float()

    reference = ReferenceLatents(
        prepared.image, field, den.num_frames, prepared.mask, encode, scale=scale, loop=loop,
        batch=den.batch_size,
    )  # fmt: skip
    hold = latent_mask(region, den.latent_size, device)
    alpha = prepared.alpha
    if alpha is not None and guidance.follow > 0:
        # The photo is pasted on the still region after decoding, faded over a few pixels into the moving
        # one to hide a seam. The held region follows the warp, whose edge already meets the photo: no fade
        # there (it slowed thin moving regions down to half their speed, measured).
        alpha = np.where(region, 0.0, alpha).astype(np.float32)
    return prepared.with_denoiser(WarpGuidedDenoiser(den, reference, hold, guidance), alpha=alpha)
