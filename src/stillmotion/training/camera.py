"""Is the camera still? A robust global (affine) motion fit on a clip's optical flow.

For each frame pair the flow is sampled on a regular grid (24 x 24 points, 10% margin so border
artefacts of the flow do not count) and a 2x3 affine map p -> A p + t is fitted to (p, p + F(p))
with RANSAC (``cv2.estimateAffine2D``, inlier threshold 0.5 px at 512 px, OpenCV's RNG seeded so
the verdict is reproducible). RANSAC keeps the largest consistent set - the background - so a
fountain, flames or a flag moving in front of a still background do not count as camera motion,
while a pan, tilt, zoom or roll moves the background the same affine way.

The clip's camera motion is the *net* drift: the per-pair affine displacements are summed over the
clip at each grid point, averaged over the grid as a magnitude and divided by the number of pairs
(px/frame, rescaled to a 512-px frame like motion strength). Summing lets a steady pan add up while
the flow's per-frame noise partly cancels; a camera that shakes without drifting is (knowingly)
not detected. Flow is noisy at small sizes (at 64 px the fit's noise alone reaches 0.5 px/frame at
512), so ``stillmotion prepare`` measures the camera on a flow at ``ANALYSIS_SIZE`` = 256 px or
more even when the cache stores smaller clips.

Threshold ``STATIC_THRESHOLD`` = 0.2 px/frame at 512 px (5 px of drift over a 25-frame clip),
chosen from measurements at 256 px with DIS flow (``python benchmarks/bench_train.py --camera``):
25-frame clips of the DynTex tripod videos (fountain, flag, campfire; 3 clips each) score
0.023-0.092, and the campfire video panned synthetically (a moving 600-px window, cover-resized)
scores 0.14 / 0.33 / 0.57 / 1.08 for true pans of 0.1 / 0.25 / 0.5 / 1.0 px/frame. 0.2 sits twice
above the worst still clip and below the 0.25 px/frame pan; pans slower than about 0.15 px/frame
are called static.
"""

from __future__ import annotations

import cv2
import numpy as np

STATIC_THRESHOLD = 0.2  # px/frame at a 512-px frame
REFERENCE_SIZE = 512
ANALYSIS_SIZE = 256  # smallest frame side the camera is measured at


def _grid(h: int, w: int, grid: int, margin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ys = np.linspace(margin * (h - 1), (1 - margin) * (h - 1), grid)
    xs = np.linspace(margin * (w - 1), (1 - margin) * (w - 1), grid)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    src = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    return src, np.round(gy).astype(int).ravel(), np.round(gx).astype(int).ravel()


def affine_displacement(flow: np.ndarray, *, grid: int = 24, margin: float = 0.1) -> np.ndarray:
    """The fitted affine map's displacement (grid*grid, 2) px at the grid points of one field."""
    h, w = flow.shape[:2]
    src, iy, ix = _grid(h, w, grid, margin)
    vec = flow[iy, ix].astype(np.float32)
    ok = np.isfinite(vec).all(1)
    if ok.sum() < 6:
        return np.zeros_like(src)
    cv2.setRNGSeed(1234)
    model, _ = cv2.estimateAffine2D(src[ok], src[ok] + vec[ok], method=cv2.RANSAC,
                                    ransacReprojThreshold=0.5 * max(h, w) / REFERENCE_SIZE,
                                    maxIters=500, confidence=0.99, refineIters=10)
    if model is None:  # degenerate fit: fall back to a pure translation by the median vector
        return np.broadcast_to(np.median(vec[ok], 0), src.shape).copy()
    return src @ model[:, :2].T + model[:, 2] - src


def camera_motion(flows: np.ndarray, *, grid: int = 24) -> float:
    """Net camera drift of a flow sequence (N, H, W, 2): px/frame at a 512-px frame."""
    flows = np.asarray(flows)
    if flows.ndim == 3:
        flows = flows[None]
    if len(flows) == 0:
        return 0.0
    net = sum(affine_displacement(f, grid=grid) for f in flows) / len(flows)
    return float(np.hypot(net[:, 0], net[:, 1]).mean()) * REFERENCE_SIZE / max(flows.shape[1], flows.shape[2])


def is_static_camera(flows: np.ndarray, threshold: float = STATIC_THRESHOLD) -> tuple[bool, float]:
    """(static?, camera motion) for a clip's flows."""
    motion = camera_motion(flows)
    return motion < threshold, motion
