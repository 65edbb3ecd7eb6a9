"""Motion-conditioned latent video diffusion on Stable Video Diffusion components (paper 3.1-3.3).

- ``pipeline``: :class:`StillMotionPipeline` (from_svd, from_pretrained/save_pretrained, prepare/decode).
- ``denoiser``: :class:`MotionDenoiser`, the UNet + conditioning as ``denoiser(x, sigma, **cond) -> x0``.
- ``motion_encoder``: flows -> multi-scale motion features z_m.
- ``motion_adapter``: motion cross-attention (eq. 4) and strength embedding (eq. 8), hooked into the UNet.
- ``lora``: the static-camera LoRA on the temporal layers.
- ``autoencoder``: the weightless space-to-depth autoencoder.
- ``tiny``: tiny in-process components for tests and training from scratch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "StillMotionPipeline": "stillmotion.diffusion.pipeline",
    "MotionDenoiser": "stillmotion.diffusion.denoiser",
    "MotionEncoder": "stillmotion.diffusion.motion_encoder",
    "MotionAdapter": "stillmotion.diffusion.motion_adapter",
    "SpaceToDepthAutoencoder": "stillmotion.diffusion.autoencoder",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stillmotion.diffusion' has no attribute {name!r}")


__all__ = list(_LAZY)
