"""stillmotion: turn a still photo into a long, controllable animation.

The data path is one straight line, one package per stage:

    inputs (image, arrows, mask) -> motion (dense field, flow, strength)
        -> engines (warp | diffusion) -> frames -> io (video file)

Heavy parts (the diffusion pipeline) are imported lazily so ``import stillmotion`` stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "StillMotionPipeline": ("stillmotion.diffusion.pipeline", "StillMotionPipeline"),
    "Arrow": ("stillmotion.inputs.arrows", "Arrow"),
    "dense_flow_from_arrows": ("stillmotion.motion.dense", "dense_flow_from_arrows"),
    "motion_strength": ("stillmotion.motion.strength", "motion_strength"),
    "animate": ("stillmotion.api", "animate"),
    "iter_frames": ("stillmotion.api", "iter_frames"),
    "animate_to_file": ("stillmotion.api", "animate_to_file"),
    "write_video": ("stillmotion.io.video_writer", "write_video"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'stillmotion' has no attribute {name!r}")


__all__ = list(_LAZY)
