"""A plain PyTorch version of the warp engine's per-frame work, to check and to time the fast one.

It follows the textbook recipe: Euler steps by gathering the field at the four neighbours, and
softmax splatting by one ``index_add_`` per bilinear corner into a numerator and a denominator.
For a loop it integrates the backward branch once and *stores every step's positions* (memory grows
with the number of frames), then reads them in reverse. It shares the set-up (importance, still
pixels, mask) and the hole filler with :class:`~stillmotion.motion.eulerian.render.EulerianWarp`, so its
frames should match the fast engine's up to float rounding (the order of additions differs).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from stillmotion.motion.eulerian.holes import fill_holes
from stillmotion.motion.eulerian.render import HOLE_EPS, EulerianWarp


def _step(pos: torch.Tensor, alive: torch.Tensor, field: torch.Tensor, sign: float) -> None:
    h, w = field.shape[:2]
    x, y = pos[:, 0], pos[:, 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    alive &= inside
    xf, yf = torch.floor(x.clamp(0, w - 1)), torch.floor(y.clamp(0, h - 1))
    fx, fy = (x.clamp(0, w - 1) - xf)[:, None], (y.clamp(0, h - 1) - yf)[:, None]
    x0, y0 = xf.long(), yf.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    m = (
        (1 - fx) * (1 - fy) * field[y0, x0]
        + fx * (1 - fy) * field[y0, x1]
        + (1 - fx) * fy * field[y1, x0]
        + fx * fy * field[y1, x1]
    )
    pos += torch.where(alive[:, None], sign * m, torch.zeros_like(m))
    x, y = pos[:, 0], pos[:, 1]
    alive &= (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def _splat(
    num: torch.Tensor,
    pos: torch.Tensor,
    alive: torch.Tensor,
    weight: float,
    src: torch.Tensor,
    h: int,
    w: int,
) -> None:
    pos, src = pos[alive], src[alive]
    xf, yf = torch.floor(pos[:, 0]), torch.floor(pos[:, 1])
    fx, fy = pos[:, 0] - xf, pos[:, 1] - yf
    x0, y0 = xf.long(), yf.long()
    for dx, dy, wgt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xx, yy = x0 + dx, y0 + dy
        ok = (xx < w) & (yy < h)
        num.index_add_(0, (yy * w + xx)[ok], (weight * wgt[ok])[:, None] * src[ok])


def reference_frames(warp: EulerianWarp) -> Iterator[np.ndarray]:
    """Yield the same frames as ``warp.frames()``, computed the straightforward way."""
    h, w = warp.image.shape[:2]
    n = warp.n_frames
    last = n if warp.include_end else n - 1
    field = torch.from_numpy(warp.field)
    src = torch.from_numpy(warp.src)
    static = torch.from_numpy(warp.static).reshape(-1, 4)
    keep = torch.from_numpy(warp.keep)
    image = torch.from_numpy(warp.image)
    start = torch.from_numpy(warp.start_pos)
    backward = []
    if warp.loop:
        pos, alive = start.clone(), torch.ones(len(start), dtype=torch.bool)
        backward.append((pos.clone(), alive.clone()))
        for _ in range(n - 1):
            _step(pos, alive, field, -1.0)
            backward.append((pos.clone(), alive.clone()))
    fpos, falive = start.clone(), torch.ones(len(start), dtype=torch.bool)
    for t in range(last + 1):
        if t > 0:
            _step(fpos, falive, field, 1.0)
        if t == 0 or warp.n_moving == 0:
            yield warp.image.copy()
            continue
        num = static.clone()
        wf = 1.0 - t / n if warp.loop else 1.0
        if wf:
            _splat(num, fpos, falive, wf, src, h, w)
        if warp.loop:
            bpos, balive = backward[n - t]
            _splat(num, bpos, balive, t / n, src, h, w)
        num = num.reshape(h, w, 4)
        den = num[..., 3:]
        hole = (den[..., 0] <= HOLE_EPS) & ~keep
        out = torch.floor(num[..., :3] / den.clamp(min=HOLE_EPS) + 0.5).clamp(0, 255).to(torch.uint8)
        out = torch.where(keep[..., None], image, out).numpy().copy()
        fill_holes(num.numpy(), hole.numpy(), out, HOLE_EPS)
        yield out
