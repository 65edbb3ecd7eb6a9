"""Filling the holes that forward splatting leaves (where no source pixel lands).

Push-pull (a multi-scale normalised convolution): the weighted sums (sum w I, sum w) are averaged
down a pyramid of halvings until a level has no empty cell, and each hole takes the colour
num / den of the first coarser level that has weight there, upsampled bilinearly. A hole therefore
gets the mean colour of the splatted pixels around it, from a neighbourhood just large enough to
reach them: cracks between diverging pixels close with their neighbours' colours, large
disoccluded areas get a smooth fill. Pixels that received weight are never touched.
Only the hole pixels are computed at full resolution, so the cost is a few coarse levels.
"""

from __future__ import annotations

import cv2
import numpy as np


def _half(acc: np.ndarray) -> np.ndarray:
    h, w = acc.shape[:2]
    return cv2.resize(acc, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)


def _colour(acc: np.ndarray, eps: float) -> np.ndarray:
    """Colour (h, w, 3) of a pyramid level, its empty cells filled from coarser levels."""
    from stillmotion.motion.eulerian.kernels import normalise

    colour = np.zeros(acc.shape[:2] + (3,), np.float32)
    empty = np.empty(acc.shape[:2], bool)
    if normalise(np.ascontiguousarray(acc), eps, colour, empty) == 0:
        return colour
    if min(acc.shape[:2]) <= 1:
        if empty.all():
            return np.zeros_like(colour)
        colour[empty] = colour[~empty].mean(axis=0)
        return colour
    coarse = _colour(_half(acc), eps)
    up = cv2.resize(coarse, (acc.shape[1], acc.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour[empty] = up[empty]
    return colour


def fill_holes(acc: np.ndarray, hole: np.ndarray, out: np.ndarray, eps: float) -> None:
    """Write a colour into ``out`` (H, W, 3) uint8 at every ``hole`` pixel, from ``acc`` (H, W, 4)."""
    from stillmotion.motion.eulerian.kernels import fill_from_coarse

    if min(hole.shape) <= 1:
        colour = _colour(acc, eps)
        out[hole] = np.clip(colour[hole] + 0.5, 0, 255).astype(np.uint8)
        return
    # Full resolution is only touched at the holes (compiled loop, no per-hole temporaries).
    fill_from_coarse(hole, _colour(_half(acc), eps), out)
