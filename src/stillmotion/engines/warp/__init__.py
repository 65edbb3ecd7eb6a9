"""The warp engine: Eulerian animation with softmax splatting and seamless loops (no weights, CPU).

See :mod:`stillmotion.engines.warp.engine` for the method and the choices made.
"""

from stillmotion.engines.warp.engine import EulerianWarp, check_warp_inputs, warp_frames

__all__ = ["EulerianWarp", "check_warp_inputs", "warp_frames"]
