"""Eulerian animation core: Euler integration of a motion field and softmax splatting of a photo.

Below the engines on purpose: the warp engine (:mod:`stillmotion.engines.warp`), the diffusion
engine's warped conditioning (:mod:`stillmotion.diffusion.warp_condition`) and the training-data
generator (:mod:`stillmotion.training.synthetic`) all render with it, from below, so none of them
imports another engine. See :mod:`stillmotion.motion.eulerian.render` for the method.
"""

from stillmotion.motion.eulerian.render import EulerianWarp, check_warp_inputs, warp_frames

__all__ = ["EulerianWarp", "check_warp_inputs", "warp_frames"]
