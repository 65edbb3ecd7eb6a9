"""The warp engine: a still photo animated along its motion field, no weights, any CPU.

The rendering itself (Euler integration, detail-keeping resampling, loops, forward phases) lives
one floor down in :mod:`stillmotion.motion.eulerian`, shared with the diffusion engine's warped
conditioning and the training-data generator; this module is the engine's public face.
"""

from stillmotion.motion.eulerian.render import EulerianWarp, check_warp_inputs, warp_frames

__all__ = ["EulerianWarp", "check_warp_inputs", "warp_frames"]
