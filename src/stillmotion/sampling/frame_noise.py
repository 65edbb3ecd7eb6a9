"""Starting noise for videos of any length, drawn frame by frame on demand.

A 1000-frame video should not need its whole noise tensor in memory when it is sampled one segment at
a time. :class:`FrameNoise` derives every frame's noise from (seed, frame index), so any range of frames
can be produced at any time, in any order, and is the same every time: the same seed gives the same
video whatever method or segment plan asks for it. :class:`TensorNoise` wraps an explicit tensor (tests,
callers that bring their own noise) behind the same two members.
"""

from __future__ import annotations

from typing import Protocol

import torch

_MIX = 1_000_003  # a prime: frame seeds of neighbouring user seeds do not collide for realistic lengths


class NoiseSource(Protocol):
    num_frames: int

    def frames(self, start: int, stop: int) -> torch.Tensor:
        """Standard normal noise of frames ``[start, stop)``, shape ``[B, stop - start, C, h, w]``."""
        ...


class FrameNoise:
    """Noise of shape ``[batch, num_frames, *frame_shape]`` made frame by frame from a seed."""

    def __init__(
        self,
        num_frames: int,
        frame_shape: tuple[int, ...],
        *,
        seed: int,
        batch: int = 1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        scale: float = 1.0,
    ) -> None:
        self.num_frames = num_frames
        self.scale = float(scale)  # e.g. init_noise_sigma / sigma_0 where a scheduler starts off sigma_0
        self.frame_shape = tuple(frame_shape)
        self.seed = int(seed)
        self.batch = batch
        self.device = torch.device(device)
        self.dtype = dtype

    def frame(self, index: int) -> torch.Tensor:
        gen = torch.Generator(device=self.device).manual_seed((self.seed * _MIX + index) % (2**63 - 1))
        shape = (self.batch, *self.frame_shape)
        out = torch.randn(shape, generator=gen, device=self.device, dtype=self.dtype)
        return out if self.scale == 1.0 else out * self.scale

    def frames(self, start: int, stop: int) -> torch.Tensor:
        if not 0 <= start <= stop <= self.num_frames:
            raise IndexError(f"frames [{start}, {stop}) outside a {self.num_frames}-frame video")
        if start == stop:
            return torch.empty((self.batch, 0, *self.frame_shape), device=self.device, dtype=self.dtype)
        return torch.stack([self.frame(i) for i in range(start, stop)], dim=1)


class TensorNoise:
    """An explicit noise tensor ``[B, N, C, h, w]`` behind the :class:`NoiseSource` interface."""

    def __init__(self, noise: torch.Tensor) -> None:
        if noise.ndim != 5:
            raise ValueError(f"noise must be [B, F, C, h, w], got shape {tuple(noise.shape)}")
        self.noise = noise
        self.num_frames = noise.shape[1]

    def frames(self, start: int, stop: int) -> torch.Tensor:
        return self.noise[:, start:stop]


def as_noise_source(noise: NoiseSource | torch.Tensor) -> NoiseSource:
    return TensorNoise(noise) if isinstance(noise, torch.Tensor) else noise
