"""Arrows to a dense motion field (paper eqs. 5-7).

eq. 5: each arrow puts its per-frame vector, times its strength M_o, at its start pixel.
eq. 6: the dense field is the Gaussian-weighted sum exp(-(D/sigma)^2) of the sparse vectors.
eq. 7: where the dense magnitude is below R the field is zero.

Choices the paper leaves open, fixed here:
- sigma is proportional to the frame size: ``sigma = SIGMA_AT_512 / 512 * max(H, W)`` (170 at 512).
- R is relative: a pixel is zeroed where its magnitude is below ``R`` times the largest sparse
  magnitude, so R = 0.05 keeps a lone arrow's field out to where its weight drops to 5%
  (about 1.73 sigma) whatever the units or speeds are.
- ``normalize=True`` (default) separates *how far* motion reaches from *which* arrow sets it.
  With sigma = 170 at 512 px the Gaussians of arrows a few hundred pixels apart overlap almost
  fully, so eq. 6's plain sum lets one group of arrows overrule another (on a real user drawing,
  clouds drawn moving right next to a sea drawn moving left came out moving left at the clouds'
  own tails). Here the *reach* is eq. 6's total weight ``min(1, sum_i g_i)`` with
  ``g_i = exp(-(D_i/sigma)^2)``, and the *vector* is an average of the arrows weighted by
  ``g_i / (D_i^2 + 1 px^2)``, which is dominated by the nearest arrow near each tail and blends
  smoothly in between. So the field equals each arrow's vector at its tail, a lone arrow gives
  eq. 6 exactly, parallel arrows drawn close together do not add up speed, and far from every
  arrow the field still falls off as eq. 6 does (zero beyond ``sigma * sqrt(ln(S / R))`` for S
  sparse vectors). ``normalize=False`` is eq. 6 verbatim.
- A multi-point trajectory contributes one sparse vector per vertex (all but the last), pointing
  along the following segment, with the speed that covers the whole path in one base clip.

eq. 6 verbatim uses the Gaussian's separability (two small matrix products); the default is one
compiled (numba) pass over the pixels: see ``benchmarks/bench_dense.py`` for timings.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
from numba import njit, prange

from stillmotion.errors import UserInputError
from stillmotion.inputs.arrows import BASE_CLIP_FRAMES, Arrow, arrow_from_any

SIGMA_AT_512 = 170.0
DEFAULT_THRESHOLD = 0.05


@njit(cache=True, nogil=True, fastmath=True, parallel=True)
def _blend_nearest(gx, gy, dx2, dy2, vec, field):  # pragma: no cover - compiled
    """field[y, x] = min(1, sum g) * sum(b v) / sum(b), with g = gy*gx and b = g / (dy2 + dx2).

    gx (W, S), gy (H, S): each sparse vector's separable Gaussian; dx2 (W, S), dy2 (H, S): squared
    distances per axis (dy2 already holds the +1 px^2); one pass over the pixels, nothing
    materialised per arrow (the whole-image NumPy version made 8 passes per arrow).
    """
    h, w, s = gy.shape[0], gx.shape[0], gx.shape[1]
    for y in prange(h):
        for x in range(w):
            reach = np.float32(0.0)
            den = np.float32(0.0)
            nx = np.float32(0.0)
            ny = np.float32(0.0)
            for i in range(s):
                g = gy[y, i] * gx[x, i]
                b = g / (dy2[y, i] + dx2[x, i])
                reach += g
                den += b
                nx += b * vec[i, 0]
                ny += b * vec[i, 1]
            if den > 0:
                k = min(reach, np.float32(1.0)) / den
                field[y, x, 0] = nx * k
                field[y, x, 1] = ny * k


def default_sigma(width: int, height: int) -> float:
    return SIGMA_AT_512 / 512.0 * max(width, height)


def sparse_flow_from_arrows(
    arrows: Sequence[Arrow], base_frames: int = BASE_CLIP_FRAMES
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse flow (eq. 5): positions (S, 2) as (x, y) and per-frame vectors (S, 2) as (dx, dy)."""
    if base_frames < 2:
        raise UserInputError(f"base_frames must be >= 2, got {base_frames}")
    positions, vectors = [], []
    for arrow in arrows:
        arrow.validate()
        speed = arrow.length / (base_frames - 1) * arrow.strength
        for a, b in zip(arrow.points[:-1], arrow.points[1:], strict=True):
            seg = math.dist(a, b)
            if seg == 0:
                continue
            positions.append(a)
            vectors.append(((b[0] - a[0]) / seg * speed, (b[1] - a[1]) / seg * speed))
    return np.asarray(positions, np.float64).reshape(-1, 2), np.asarray(vectors, np.float64).reshape(-1, 2)


def dense_flow_from_arrows(
    arrows: Sequence[Arrow],
    width: int,
    height: int,
    *,
    sigma: float | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    mask: np.ndarray | None = None,
    normalize: bool = True,
    base_frames: int = BASE_CLIP_FRAMES,
) -> np.ndarray:
    """Dense per-frame motion field (H, W, 2) float32 from arrows (eqs. 5-7), zero outside ``mask``.

    ``arrows``: :class:`Arrow` objects, ``"X0,Y0,X1,Y1[,S]"`` strings or (x0, y0, x1, y1[, s]) numbers.
    """
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (width, height)):
        raise UserInputError(f"image size must be whole numbers of pixels, got {width!r}x{height!r}")
    if width < 1 or height < 1:
        raise UserInputError(f"image size must be positive, got {width}x{height}")
    if arrows is None or isinstance(arrows, str | Arrow) or not isinstance(arrows, Sequence | np.ndarray):
        raise UserInputError(f"arrows must be a list of arrows, got {arrows!r:.80}")
    arrows = [arrow_from_any(a, i) for i, a in enumerate(arrows)]
    if not (isinstance(threshold, numbers.Real) and not isinstance(threshold, bool)):
        raise UserInputError(f"threshold R must be a number in [0, 1), got {threshold!r}")
    if sigma is not None and (isinstance(sigma, bool) or not isinstance(sigma, numbers.Real)):
        raise UserInputError(f"sigma must be a positive number, got {sigma!r}")
    sigma = default_sigma(width, height) if sigma is None else float(sigma)
    if not (sigma > 0 and math.isfinite(sigma)):
        raise UserInputError(f"sigma must be a positive number, got {sigma}")
    if not (0 <= threshold < 1):
        raise UserInputError(f"threshold R must be in [0, 1), got {threshold}")
    if mask is not None and not isinstance(mask, np.ndarray):
        raise UserInputError(f"mask must be a boolean (H, W) array, got {type(mask).__name__}")
    if mask is not None and mask.shape != (height, width):
        raise UserInputError(f"mask shape {mask.shape} does not match the image ({height}, {width})")
    field = np.zeros((height, width, 2), np.float32)
    pos, vec = sparse_flow_from_arrows(arrows, base_frames)
    if len(pos) == 0:
        return field
    gx = np.exp(-(((np.arange(width)[None, :] - pos[:, :1]) / sigma) ** 2)).astype(np.float32)  # (S, W)
    gy = np.exp(-(((np.arange(height)[None, :] - pos[:, 1:]) / sigma) ** 2)).astype(np.float32)  # (S, H)
    vec32 = vec.astype(np.float32)
    if not normalize:
        field[..., 0] = gy.T @ (vec32[:, :1] * gx)
        field[..., 1] = gy.T @ (vec32[:, 1:] * gx)
    else:
        d2_x = ((np.arange(width)[:, None] - pos[None, :, 0]) ** 2).astype(np.float32)  # (W, S)
        d2_y = ((np.arange(height)[:, None] - pos[None, :, 1]) ** 2 + 1.0).astype(np.float32)  # (H, S)
        _blend_nearest(np.ascontiguousarray(gx.T), np.ascontiguousarray(gy.T), d2_x, d2_y, vec32, field)
    magnitude = np.hypot(field[..., 0], field[..., 1])
    field[magnitude < threshold * float(np.hypot(vec[:, 0], vec[:, 1]).max())] = 0.0
    if mask is not None:
        field[~mask] = 0.0
    return field
