"""The warp engine: Eulerian animation with softmax splatting and seamless loops (no weights, CPU).

The renderer is :mod:`stillmotion.motion.eulerian` (see its ``render`` module for the method and the
choices made); this package is the engine that the API and the CLI pick by name.
"""

from stillmotion.engines.warp.engine import EulerianWarp, check_warp_inputs, render, warp_frames

__all__ = ["EulerianWarp", "check_warp_inputs", "render", "warp_frames"]
