"""Motion encoder (paper sec. 3.2, after Endo et al. 2019): per-frame flow fields -> motion feature maps z_m.

Input: flows ``[B, F, 2, H, W]`` where entry k is the flow from frame k to frame k+1 (the last
frame repeats the flow before it), already normalised by :func:`normalize_flows`, at
``latent size * 2**input_downsample``. A strided-convolution stem brings it to the latent size,
then every level holds residual blocks and a stride-2 convolution leads to the next level, like
Endo et al.'s encoder (strided conv + residual blocks, widths growing 64-128-192-256). Level i has
the latent size / 2**i, the resolution of the UNet's spatio-temporal transformers at depth i, so
every motion cross-attention reads a feature map at exactly its own resolution.

Frames are encoded independently (the UNet's temporal layers mix time): a static field repeated
over F frames is encoded once and expanded, which is how long videos keep memory flat.

Normalisation: vectors in pixels per frame at a frame whose longer side is ``max(H, W)`` pixels are
divided by that side and multiplied by 100, i.e. expressed in percent of the frame per frame. The
encoder then sees the same numbers for the same motion at 64 px or at 1024 px, and typical values
(0-5) suit a convolution's input range.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

FLOW_UNIT = 100.0  # percent of the frame's longer side per frame


def normalize_flows(flows: torch.Tensor, frame_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Pixel flows -> encoder input.

    flows: ``[B, F, 2, H, W]`` (dx, dy) px/frame measured on a frame of ``frame_size`` (H, W)
    (the field may be stored at another resolution; its vectors are in the frame's pixels).
    Returns ``[B, F, 2, size[0], size[1]]`` in percent of the frame's longer side per frame,
    area-resized. A field expanded along F (stride 0) is resized once and stays expanded.
    """
    if flows.ndim != 5 or flows.shape[2] != 2:
        raise ValueError(f"flows must have shape [B, F, 2, H, W], got {tuple(flows.shape)}")
    b, f = flows.shape[:2]
    scale = FLOW_UNIT / max(frame_size)
    static = f > 1 and flows.stride(1) == 0
    x = flows[:, :1] if static else flows
    x = x.flatten(0, 1).float() * scale
    if tuple(x.shape[-2:]) != tuple(size):
        x = (
            F.interpolate(x, size=size, mode="area")
            if _shrinks(x, size)
            else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        )
    x = x.reshape(b, -1, 2, *size)
    return x.expand(b, f, 2, *size) if static else x


def _shrinks(x: torch.Tensor, size: tuple[int, int]) -> bool:
    return x.shape[-2] >= size[0] and x.shape[-1] >= size[1]


def _groups(channels: int) -> int:
    return math.gcd(channels, 32) if channels >= 8 else 1


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


class MotionEncoder(ModelMixin, ConfigMixin):
    """CNN over per-frame flows producing one motion feature map per UNet resolution level."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 2,
        block_out_channels: tuple[int, ...] = (64, 128, 192, 256),
        layers_per_block: int = 2,
        input_downsample: int = 2,
        stem_channels: int = 32,
    ):
        super().__init__()
        if input_downsample < 0:
            raise ValueError(f"input_downsample must be >= 0, got {input_downsample}")
        stem: list[nn.Module] = [nn.Conv2d(in_channels, stem_channels, 3, padding=1)]
        ch = stem_channels
        for _ in range(input_downsample):
            stem += [nn.SiLU(), nn.Conv2d(ch, ch, 3, stride=2, padding=1)]
        stem += [nn.SiLU(), nn.Conv2d(ch, block_out_channels[0], 3, padding=1)]
        self.stem = nn.Sequential(*stem)
        self.levels = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        for i, c in enumerate(block_out_channels):
            self.levels.append(nn.Sequential(*[ResidualBlock(c) for _ in range(layers_per_block)]))
            if i + 1 < len(block_out_channels):
                self.downsamplers.append(nn.Conv2d(c, block_out_channels[i + 1], 3, stride=2, padding=1))

    @classmethod
    def for_unet(cls, unet, base_channels: int = 64, **kwargs) -> MotionEncoder:
        """An encoder with one level per UNet resolution, widths base * (1, 2, 3, 4, ...) as Endo's."""
        levels = len(unet.config.block_out_channels)
        return cls(block_out_channels=tuple(base_channels * (i + 1) for i in range(levels)), **kwargs)

    @property
    def num_levels(self) -> int:
        return len(self.config.block_out_channels)

    def input_size(self, latent_size: tuple[int, int]) -> tuple[int, int]:
        """The flow resolution this encoder takes for latents of ``latent_size`` (h, w)."""
        s = 2**self.config.input_downsample
        return latent_size[0] * s, latent_size[1] * s

    def forward(self, flows: torch.Tensor) -> list[torch.Tensor]:
        """flows ``[B, F, 2, H, W]`` (normalised) -> list over levels of ``[B*F, C_i, h_i, w_i]``.

        A field expanded along F (stride 0, a static field) is encoded once and expanded.
        """
        if flows.ndim != 5:
            raise ValueError(f"flows must have shape [B, F, 2, H, W], got {tuple(flows.shape)}")
        b, f = flows.shape[:2]
        static = f > 1 and flows.stride(1) == 0
        x = (flows[:, :1] if static else flows).flatten(0, 1).to(self.dtype)
        x = self.stem(x)
        feats = []
        for i, level in enumerate(self.levels):
            x = level(x)
            feats.append(x)
            if i < len(self.downsamplers):
                x = self.downsamplers[i](x)
        if static:
            feats = [t.unsqueeze(1).expand(b, f, *t.shape[1:]).flatten(0, 1) for t in feats]
        return feats
