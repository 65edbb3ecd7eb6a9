"""Where a warp loop stretches the photo: the maps a loop's two branches read along and the areas both
magnify, where ladder or smear artefacts would show (benchmarks/bench_warp_quality.py and its test)."""

from __future__ import annotations

import cv2
import numpy as np


def trace_maps(field: np.ndarray, mask: np.ndarray, sign: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel traced ``steps`` Euler steps along ``sign`` * field (bilinear), never stepping
    onto a still pixel or out of the frame: the maps a loop's two branches read along."""
    h, w = mask.shape
    y, x = (a.astype(np.float32) for a in np.mgrid[0:h, 0:w])
    for _ in range(steps):
        mx = cv2.remap(field[..., 0], x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        my = cv2.remap(field[..., 1], x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        nx, ny = x + sign * mx, y + sign * my
        ok = (nx >= 0) & (nx <= w - 1) & (ny >= 0) & (ny <= h - 1)
        ok &= mask[np.clip(np.rint(ny), 0, h - 1).astype(int), np.clip(np.rint(nx), 0, w - 1).astype(int)]
        x, y = np.where(ok, nx, x), np.where(ok, ny, y)
    return x, y


def magnification(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The smaller singular value of the map's Jacobian per pixel, smoothed (sigma 2 px)."""
    jac = np.stack([np.stack([np.gradient(x, axis=1), np.gradient(x, axis=0)], -1),
                    np.stack([np.gradient(y, axis=1), np.gradient(y, axis=0)], -1)], -2)  # fmt: skip
    return cv2.GaussianBlur(np.linalg.svd(jac, compute_uv=False)[..., 1].astype(np.float32), (0, 0), 2)


def stretched_region(field: np.ndarray, mask: np.ndarray, frames: int) -> np.ndarray:
    """Where both branches of frame N/2 of an N-frame loop magnify the photo (smaller singular value
    < 0.5), inside the mask eroded by 7 px."""
    u = frames // 2
    back = magnification(*trace_maps(field, mask, -1.0, u))
    ahead = magnification(*trace_maps(field, mask, 1.0, frames - u))
    region = cv2.erode(mask.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    return region & (np.maximum(back, ahead) < 0.5)
