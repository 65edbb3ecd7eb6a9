"""The warp engine: a still photo animated along its motion field, no weights, any CPU.

The rendering itself (Euler integration, splatting, loops, holes) lives one floor down in
:mod:`stillmotion.motion.eulerian`, shared with the diffusion engine's warped conditioning and the
training-data generator; this module is the engine's public face.
"""

from stillmotion.motion.eulerian.render import (
    DEFAULT_CHECKPOINT_MB,
    HOLE_EPS,
    SOFTMAX_BETA,
    EulerianWarp,
    check_warp_inputs,
    warp_frames,
)

__all__ = [
    "DEFAULT_CHECKPOINT_MB",
    "HOLE_EPS",
    "SOFTMAX_BETA",
    "EulerianWarp",
    "check_warp_inputs",
    "warp_frames",
]
