"""What a backbone's ``prepare`` returns: the denoiser the samplers integrate, beside the facts about the
frames that the decoder, warp-guided control and the engines read.

Both backbones (``StillMotionPipeline`` for SVD, ``WanBackbone`` for Wan 2.x) return a :class:`Prepared`,
and their ``decode`` (Wan also ``stream_decoder``, ``warp_reference``) take it back. The facts live here and
not on the denoiser, so a wrapper of the denoiser (warp-guided control, a progress counter, a test's
recorder) is a new ``Prepared`` with :meth:`Prepared.with_denoiser` instead of an object that must forward
a dict.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Prepared:
    """A prepared video: its denoiser and the inputs as fitted to the model's size.

    - ``denoiser``: ``denoiser(x, sigma, frames=..., **cond) -> x0`` (``MotionDenoiser``, ``WanDenoiser``
      or a wrapper of one); its ``num_frames`` counts latent frames.
    - ``image``: the photo at ``width`` x ``height``, uint8 (H, W, 3).
    - ``video_frames``: video frames asked for (SVD: = the latent frames; Wan: the decoder cuts to these).
    - ``field``: the motion field as used, (H, W, 2) or (F, H, W, 2) px per frame, or None.
    - ``mask``: bool (H, W), True where motion is allowed, or None (everything may move).
    - ``alpha``: float32 (H, W) weight of the photo pasted over the decoded frames (1 still), or None.
    - ``strength``: the global motion strength M_s the model is conditioned on, or None.
    - ``motion_trained``: whether the model's motion modules take part (SVD with trained modules).
    """

    denoiser: Any
    image: np.ndarray
    width: int
    height: int
    video_frames: int
    field: np.ndarray | None = None
    mask: np.ndarray | None = None
    alpha: np.ndarray | None = None
    strength: float | None = None
    motion_trained: bool = False

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def with_denoiser(self, denoiser: Any, **changes: Any) -> Prepared:
        """The same video with another denoiser (a wrapper of this one) and any fact replaced."""
        return dataclasses.replace(self, denoiser=denoiser, **changes)
