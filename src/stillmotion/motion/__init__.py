"""Motion fields: arrows -> sparse flow -> dense flow, flow from videos, motion strength.

Convention everywhere in the project: a motion field is a float32 array of shape (H, W, 2) holding
(dx, dy) in pixels per frame at the image's resolution; a flow sequence is (N, H, W, 2).
"""

from stillmotion.motion.dense import dense_flow_from_arrows, sparse_flow_from_arrows
from stillmotion.motion.strength import motion_strength

__all__ = ["dense_flow_from_arrows", "sparse_flow_from_arrows", "motion_strength"]
