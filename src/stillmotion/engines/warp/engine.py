"""The warp engine: a still photo animated along its motion field, no weights, any CPU.

The rendering itself (Euler integration, detail-keeping resampling, loops, forward phases) lives
one floor down in :mod:`stillmotion.motion.eulerian`, shared with the diffusion engine's warped
conditioning and the training-data generator; this module is the engine's public face and its entry
point in the registry (:func:`render`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from stillmotion.engines.options import RenderRequest
from stillmotion.inputs.scene import Scene
from stillmotion.motion.eulerian.render import EulerianWarp, check_warp_inputs, warp_frames

__all__ = ["EulerianWarp", "check_warp_inputs", "render", "warp_frames"]


def render(
    scene: Scene, field: np.ndarray | None, request: RenderRequest, options: dict[str, Any]
) -> tuple[Iterator[np.ndarray], dict[str, Any]]:
    """The registry's entry point: frames of ``scene`` along ``field`` (the API has checked both and brought
    them to the requested size); stats (loop, strength, then the renderer's own) complete at the end."""
    warp = EulerianWarp(
        scene.image, field, frames=int(request.frames), loop=request.loop, strength=request.strength,
        mask=scene.mask,
    )  # fmt: skip
    stats: dict[str, Any] = {"loop": bool(request.loop), "strength": float(request.strength)}

    def frames_then_stats() -> Iterator[np.ndarray]:
        yield from warp.frames(progress=request.progress)
        stats.update(warp.stats)

    return frames_then_stats(), stats
