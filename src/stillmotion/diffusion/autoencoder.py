"""A weightless autoencoder: space-to-depth with a fixed orthonormal basis (for models trained from scratch).

``encode``: every f x f x 3 block of pixels (f = ``downscale_factor``) becomes one latent pixel of
``3 f^2`` coefficients in a fixed orthonormal basis: the 2-D DCT-II of the block times an
orthonormal colour transform (luma (1,1,1)/sqrt3, then two opponent axes), ordered from low to high
frequency (luma first at each frequency). ``decode`` applies the transpose. With all ``3 f^2``
channels the round trip is exact (lossless up to float rounding); ``latent_channels`` below that
keeps the lowest-frequency coefficients, a fixed low-pass (lossy) compression. There are no learned
weights: the basis is rebuilt from the config and stored only as a check.

It exposes the small interface the pipeline uses, like AutoencoderKLTemporalDecoder's:
``encode(x).latent_dist.mode()/.sample()``, ``decode(z, num_frames=...).sample`` and
``config.scaling_factor`` (default 1/f, which brings the luma DC coefficient, f*sqrt3 times the
block's mean, back near the pixels' own scale).

Per-channel normalisation (``latents_mean`` / ``latents_std``, measured on training frames with
:func:`latent_statistics`): natural images put almost all their energy in the DC coefficients (std ~7
against ~0.03 for the finest kept ones), so one global scale leaves the detail channels far below the
diffusion noise and a small UNet never learns to denoise them: they came out as coloured block noise
(docs/training.md). Whitening each channel gives every coefficient unit variance, as SVD's objective
assumes of its latents, and the decoder multiplies the UNet's error in a detail channel by that channel's
small std, but also its error in a DC channel by that channel's large one: for the bundled model this was
measured worse than one global scale (docs/training.md), which it keeps. The transform stays affine and
invertible (lossless at the full channel count).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook


class FixedLatent:
    """A point 'distribution' so callers can use ``latent_dist.mode()`` / ``.sample()`` as with a VAE."""

    def __init__(self, z: torch.Tensor):
        self.mean = z
        self.std = torch.zeros_like(z)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean


@dataclass
class SpaceToDepthOutput(BaseOutput):
    latent_dist: FixedLatent


def orthonormal_basis(factor: int) -> torch.Tensor:
    """``[3 f^2, 3 f^2]`` rows = basis vectors over pixel_unshuffle's channel order (c, i, j)."""
    f = factor
    n = torch.arange(f, dtype=torch.float64)
    dct = torch.stack([torch.cos(math.pi * (2 * n + 1) * k / (2 * f)) for k in range(f)])
    dct[0] *= math.sqrt(1.0 / f)
    dct[1:] *= math.sqrt(2.0 / f)
    colour = torch.tensor(
        [
            [1 / math.sqrt(3)] * 3,
            [1 / math.sqrt(2), 0.0, -1 / math.sqrt(2)],
            [1 / math.sqrt(6), -2 / math.sqrt(6), 1 / math.sqrt(6)],
        ],
        dtype=torch.float64,
    )
    order = sorted(
        ((u, v, c) for u in range(f) for v in range(f) for c in range(3)),
        key=lambda t: (t[0] + t[1], max(t[0], t[1]), t[2], t[0], t[1]),
    )
    rows = [torch.einsum("c,i,j->cij", colour[c], dct[u], dct[v]).flatten() for u, v, c in order]
    return torch.stack(rows).float()


class SpaceToDepthAutoencoder(ModelMixin, ConfigMixin):
    """Fixed, lossless (at full channel count) pixel-unshuffle autoencoder with an orthonormal basis."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        downscale_factor: int = 4,
        latent_channels: int | None = None,
        scaling_factor: float | None = None,
        in_channels: int = 3,
        force_upcast: bool = False,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
    ):
        super().__init__()
        if in_channels != 3:
            raise ValueError("SpaceToDepthAutoencoder works on RGB images (in_channels=3)")
        full = 3 * downscale_factor**2
        latent_channels = full if latent_channels is None else latent_channels
        if not 1 <= latent_channels <= full:
            raise ValueError(f"latent_channels must be in 1..{full}, got {latent_channels}")
        self.register_to_config(
            latent_channels=latent_channels,
            scaling_factor=1.0 / downscale_factor if scaling_factor is None else scaling_factor,
        )
        self.register_buffer("basis", orthonormal_basis(downscale_factor)[:latent_channels].clone())
        mean = torch.zeros(latent_channels) if latents_mean is None else torch.tensor(latents_mean).float()
        std = torch.ones(latent_channels) if latents_std is None else torch.tensor(latents_std).float()
        if mean.shape != (latent_channels,) or std.shape != (latent_channels,):
            raise ValueError(
                f"latents_mean and latents_std must hold {latent_channels} values (one per channel)"
            )
        if not bool((std > 0).all()) or not bool(torch.isfinite(mean).all()):
            raise ValueError("latents_std must be > 0 and latents_mean finite")
        # Config values, not weights: rebuilt on load like the basis (non-persistent buffers).
        self.register_buffer("shift", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("scale", std.view(1, -1, 1, 1), persistent=False)

    @property
    def lossless(self) -> bool:
        return self.config.latent_channels == 3 * self.config.downscale_factor**2

    @apply_forward_hook  # model CPU offload moves the module on encode/decode, not only forward
    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """Pixels ``[N, 3, H, W]`` (H, W multiples of the factor) -> latents ``[N, C, H/f, W/f]``."""
        f = self.config.downscale_factor
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the factor {f}")
        z = self.coefficients(x)
        z = (z - self.shift.to(z.dtype)) / self.scale.to(z.dtype)
        out = FixedLatent(z)
        return SpaceToDepthOutput(latent_dist=out) if return_dict else (out,)

    @apply_forward_hook
    def decode(self, z: torch.Tensor, num_frames: int | None = None, return_dict: bool = True):
        """Latents ``[N, C, h, w]`` -> pixels ``[N, 3, h*f, w*f]``; ``num_frames`` is accepted and unused
        (each frame decodes on its own)."""
        z = z * self.scale.to(z.dtype) + self.shift.to(z.dtype)
        y = torch.einsum("kc,nkhw->nchw", self.basis.to(z.dtype), z)
        x = F.pixel_shuffle(y, self.config.downscale_factor)
        return DecoderOutput(sample=x) if return_dict else (x,)

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels ``[N, 3, H, W]`` -> the kept basis coefficients ``[N, C, H/f, W/f]``, before the
        per-channel normalisation."""
        y = F.pixel_unshuffle(x, self.config.downscale_factor)
        return torch.einsum("kc,nchw->nkhw", self.basis.to(y.dtype), y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).latent_dist.mode()).sample


@torch.no_grad()
def latent_statistics(
    vae: SpaceToDepthAutoencoder, frames: Iterable[torch.Tensor], *, min_std: float = 1e-3
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the un-normalised coefficients over ``frames`` (batches of pixels
    ``[N, 3, H, W]`` in [-1, 1]), for the ``latents_mean`` / ``latents_std`` config; stds are floored at
    ``min_std`` so a channel that never varies in the sample cannot blow up."""
    total, s1, s2 = 0, None, None
    for x in frames:
        z = vae.coefficients(x.float()).double()
        n = z.shape[0] * z.shape[2] * z.shape[3]
        a, b = z.sum((0, 2, 3)), (z * z).sum((0, 2, 3))
        s1, s2 = (a, b) if s1 is None else (s1 + a, s2 + b)
        total += n
    if not total:
        raise ValueError("latent_statistics: no frames given")
    mean = s1 / total
    std = (s2 / total - mean * mean).clamp_min(0).sqrt().clamp_min(min_std)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]
