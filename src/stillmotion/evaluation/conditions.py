"""What each method is asked to do, taken from a real video: input image, motion condition, mask.

For a real clip of N frames the input image is frame 0. The condition is the clip's own motion:

- ``flow``: its per-frame optical flows (N-1, H, W, 2); engines that take one static field (the warp
  engine) get their mean.
- ``arrows``: a few arrows placed where the mean flow is strongest, each pointing along the local
  mean motion with the length that covers one 25-frame base clip (the meaning of an arrow), turned
  into a dense field by the paper's eqs. 5-7 (``dense_flow_from_arrows``) - the path a user takes.

The mask (True = may move) is where the clip's mean speed exceeds a small fraction of its maximum,
dilated a little; outside it the real clip is (nearly) still, and that is where still-region drift
is measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from stillmotion.inputs.arrows import BASE_CLIP_FRAMES, Arrow
from stillmotion.motion.dense import dense_flow_from_arrows

CONDITIONS = ("flow", "arrows")
MASK_REL_THRESHOLD = 0.1  # of the clip's top (99th percentile) mean speed
MASK_MIN_SPEED = 0.15  # px/frame: below this nothing counts as moving


@dataclass
class Condition:
    """Everything a method receives for one clip, and the motion it is asked for."""

    kind: str  # "flow" or "arrows"
    image: np.ndarray  # (H, W, 3) uint8, frame 0 of the real clip
    flows: np.ndarray  # (N-1, H, W, 2): the real clip's own flows
    field: np.ndarray  # (H, W, 2): a static field (mean flow, or the arrows' dense field)
    mask: np.ndarray  # (H, W) bool, True where things may move
    arrows: list[Arrow] = field(default_factory=list)

    def requested(self, static: bool) -> np.ndarray:
        """The motion a method was asked for: the static field, or the per-frame flows."""
        return self.field if static or self.kind == "arrows" else self.flows


def motion_mask(
    flows: np.ndarray, rel: float = MASK_REL_THRESHOLD, min_speed: float = MASK_MIN_SPEED
) -> np.ndarray:
    """Where a clip moves: mean speed above ``rel`` x its 99th percentile (and ``min_speed``), dilated."""
    speed = np.sqrt((flows.astype(np.float32) ** 2).sum(-1)).mean(0)
    top = float(np.percentile(speed, 99)) if speed.size else 0.0
    moving = speed > max(rel * top, min_speed)
    k = max(3, (min(speed.shape) // 32) | 1)
    return cv2.dilate(moving.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)


def sample_arrows(
    field: np.ndarray, mask: np.ndarray, count: int = 5, min_distance: float | None = None
) -> list[Arrow]:
    """Up to ``count`` arrows at the strongest points of ``field`` inside ``mask``, spread apart.

    Each arrow starts at a point and points along the field there; its length is the speed times
    (BASE_CLIP_FRAMES - 1), clipped to the image, so that it means "this content moves this far in
    one base clip" as users draw it.
    """
    h, w = field.shape[:2]
    speed = np.hypot(field[..., 0], field[..., 1]) * mask
    if min_distance is None:
        min_distance = max(h, w) / 6
    # Smooth first so an arrow sits in a coherent region, not on a flow outlier.
    smooth = cv2.GaussianBlur(speed, (0, 0), max(1.0, max(h, w) / 64))
    order = np.argsort(smooth, axis=None)[::-1]
    picks: list[tuple[int, int]] = []
    for idx in order[: max(1000, 50 * count)]:
        y, x = divmod(int(idx), w)
        if smooth[y, x] <= MASK_MIN_SPEED:
            break
        if all((x - px) ** 2 + (y - py) ** 2 >= min_distance**2 for px, py in picks):
            picks.append((x, y))
            if len(picks) == count:
                break
    arrows = []
    for i, (x, y) in enumerate(picks):
        r = max(2, int(max(h, w) / 64))
        vx, vy = field[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].reshape(-1, 2).mean(0)
        length = BASE_CLIP_FRAMES - 1
        x1 = float(np.clip(x + vx * length, 0, w - 1))
        y1 = float(np.clip(y + vy * length, 0, h - 1))
        if (x1 - x) ** 2 + (y1 - y) ** 2 < 1.0:
            continue
        arrows.append(Arrow(((float(x), float(y)), (x1, y1)), 1.0, f"sampled{i}"))
    return arrows


def condition_from_clip(
    frames: np.ndarray, flows: np.ndarray, kind: str = "flow", n_arrows: int = 5
) -> Condition:
    """Build the condition of a real clip (N, H, W, 3) from its flows (N-1, H, W, 2)."""
    if kind not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {kind!r}")
    mask = motion_mask(flows)
    mean = flows.mean(0).astype(np.float32)
    if kind == "flow":
        return Condition("flow", frames[0], flows.astype(np.float32), mean, mask)
    h, w = frames.shape[1:3]
    arrows = sample_arrows(mean, mask, n_arrows)
    dense = dense_flow_from_arrows(arrows, w, h, mask=mask) if arrows else np.zeros((h, w, 2), np.float32)
    return Condition("arrows", frames[0], flows.astype(np.float32), dense, mask, arrows)
