"""Compiled inner loops of the Eulerian renderer (numba): Euler steps, map composition, blending.

The heavy per-pixel sampling is OpenCV's ``remap`` (vectorised); what is left here are the loops
OpenCV has no operation for. The kernels are serial and release the GIL (``nogil``): the renderer
runs them on two Python threads split by pixel or row ranges. Blocking Python threads degrade
gracefully when other programs compete for the cores, unlike spinning OpenMP workers (measured:
numba's ``parallel=True`` ran 5x *slower* than one thread on a shared 2-core machine under load).

Conventions: positions are float32 (x, y) in pixels of the (H, W) frame, stored as (n, 2) or as a
grid (hc, wc, 2) of nodes; ``alive`` is False once a trace has left the frame (it then keeps its
last position inside the frame).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, fastmath=True)
def euler_advance(
    pos: np.ndarray, alive: np.ndarray, field: np.ndarray, moving: np.ndarray, sign: float, steps: int
) -> None:
    """``steps`` Euler steps in place: x <- x + sign * M(x), M sampled bilinearly at x.

    A position that leaves [0, W-1] x [0, H-1] is marked dead and keeps its last position. A step
    that would end on a pixel that does not move (``moving`` False: outside the mask) is not taken:
    the trace stays inside the moving region, so no still texture (rock beside a waterfall) is read
    into the moving one; the branch that smears there gives way to the other (its Jacobian).
    The body has no branches (selects instead), which lets the compiler vectorise it: about 1.5x
    faster than the obvious loop with ``continue``/``break``.
    """
    h, w = field.shape[0], field.shape[1]
    xmax = np.float32(w - 1)
    ymax = np.float32(h - 1)
    zero = np.float32(0)
    one = np.float32(1)
    half = np.float32(0.5)
    s = np.float32(sign)
    for _ in range(steps):
        for i in range(pos.shape[0]):
            x = pos[i, 0]
            y = pos[i, 1]
            ok = alive[i] and x >= zero and x <= xmax and y >= zero and y <= ymax
            xc = min(max(x, zero), xmax)  # clamped so that dead positions read inside the field
            yc = min(max(y, zero), ymax)
            xf = np.floor(xc)
            yf = np.floor(yc)
            fx = xc - xf  # float32 throughout: mixing in int64 would promote the arithmetic to float64
            fy = yc - yf
            x0 = int(xf)
            y0 = int(yf)
            x1 = min(x0 + 1, w - 1)
            y1 = min(y0 + 1, h - 1)
            a = (one - fx) * (one - fy)
            b = fx * (one - fy)
            c = (one - fx) * fy
            d = fx * fy
            mx = a * field[y0, x0, 0] + b * field[y0, x1, 0] + c * field[y1, x0, 0] + d * field[y1, x1, 0]
            my = a * field[y0, x0, 1] + b * field[y0, x1, 1] + c * field[y1, x0, 1] + d * field[y1, x1, 1]
            nx = x + s * mx
            ny = y + s * my
            inside = nx >= zero and nx <= xmax and ny >= zero and ny <= ymax
            xn = int(min(max(nx, zero), xmax) + half)
            yn = int(min(max(ny, zero), ymax) + half)
            take = ok and inside and moving[yn, xn]
            pos[i, 0] = nx if take else x
            pos[i, 1] = ny if take else y
            alive[i] = ok and inside


@njit(cache=True, nogil=True, fastmath=True)
def euler_rows(
    pos: np.ndarray,
    alive: np.ndarray,
    field: np.ndarray,
    moving: np.ndarray,
    sign: float,
    steps: int,
    lo: np.ndarray,
    hi: np.ndarray,
    row_start: int,
    row_stop: int,
) -> None:
    """:func:`euler_advance` on a node grid (hc, wc, 2), only nodes lo[i] <= j < hi[i] of rows
    [row_start, row_stop): the nodes whose traces some frame pixel reads."""
    for i in range(row_start, row_stop):
        if hi[i] > lo[i]:
            euler_advance(pos[i, lo[i] : hi[i]], alive[i, lo[i] : hi[i]], field, moving, sign, steps)


@njit(cache=True, nogil=True, fastmath=True)
def compose_step(
    pos: np.ndarray,
    alive: np.ndarray,
    nodes: np.ndarray,
    field: np.ndarray,
    out_pos: np.ndarray,
    out_alive: np.ndarray,
    row_start: int,
    row_stop: int,
) -> None:
    """One step of a field that changes from frame to frame, for a gather map on a grid of nodes.

    ``pos`` (hc, wc, 2) maps each node q to where its content was when the trace started;
    one more step along ``field`` gives P'(q) = P(q - M(q)): the previous map read (bilinearly,
    between nodes) where q's content was one frame earlier. ``nodes`` (hc, wc, 2) holds the
    nodes' own positions in the frame. Rows [row_start, row_stop) of ``out_*`` are written.
    """
    hc, wc = pos.shape[0], pos.shape[1]
    h, w = field.shape[0], field.shape[1]
    xmax = np.float32(w - 1)
    ymax = np.float32(h - 1)
    zero = np.float32(0)
    one = np.float32(1)
    # node (i, j) sits at nodes[i, j]; the grid is regular: origin and spacing from its corners
    ox = nodes[0, 0, 0]
    oy = nodes[0, 0, 1]
    sx = (nodes[0, wc - 1, 0] - ox) / np.float32(max(wc - 1, 1)) if wc > 1 else one
    sy = (nodes[hc - 1, 0, 1] - oy) / np.float32(max(hc - 1, 1)) if hc > 1 else one
    for i in range(row_start, row_stop):
        for j in range(wc):
            qx = min(max(nodes[i, j, 0], zero), xmax)
            qy = min(max(nodes[i, j, 1], zero), ymax)
            x0 = int(np.floor(qx))
            y0 = int(np.floor(qy))
            fx = qx - np.float32(x0)
            fy = qy - np.float32(y0)
            x1 = min(x0 + 1, w - 1)
            y1 = min(y0 + 1, h - 1)
            a = (one - fx) * (one - fy)
            b = fx * (one - fy)
            c = (one - fx) * fy
            d = fx * fy
            mx = a * field[y0, x0, 0] + b * field[y0, x1, 0] + c * field[y1, x0, 0] + d * field[y1, x1, 0]
            my = a * field[y0, x0, 1] + b * field[y0, x1, 1] + c * field[y1, x0, 1] + d * field[y1, x1, 1]
            px = nodes[i, j, 0] - mx
            py = nodes[i, j, 1] - my
            inside = px >= zero and px <= xmax and py >= zero and py <= ymax
            # where px, py falls in the node grid
            gx = min(max((px - ox) / sx, zero), np.float32(wc - 1))
            gy = min(max((py - oy) / sy, zero), np.float32(hc - 1))
            j0 = int(np.floor(gx))
            i0 = int(np.floor(gy))
            ex = gx - np.float32(j0)
            ey = gy - np.float32(i0)
            j1 = min(j0 + 1, wc - 1)
            i1 = min(i0 + 1, hc - 1)
            a = (one - ex) * (one - ey)
            b = ex * (one - ey)
            c = (one - ex) * ey
            d = ex * ey
            for k in range(2):
                top = a * pos[i0, j0, k] + b * pos[i0, j1, k]
                out_pos[i, j, k] = top + c * pos[i1, j0, k] + d * pos[i1, j1, k]
            near_i = i0 if ey < np.float32(0.5) else i1
            near_j = j0 if ex < np.float32(0.5) else j1
            out_alive[i, j] = inside and alive[i, j] and alive[near_i, near_j]


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _stretch(pos: np.ndarray, alive: np.ndarray, i: int, j: int, inv_x: float, inv_y: float) -> float:
    """How much of the photo's detail a gather map keeps at node (i, j): its Jacobian's determinant
    (source area per output area), clipped to [0, 1] and squared; 0 for a dead trace.

    1 where content is carried rigidly or compressed; towards 0 where a small piece of the photo is
    smeared over a large area (behind an arrow, where content left and nothing flowed in).
    Central differences (one-sided at the grid's edges: ``inv_*`` is 1 / the distance used).
    """
    hc, wc = pos.shape[0], pos.shape[1]
    i0 = max(i - 1, 0)
    i1 = min(i + 1, hc - 1)
    j0 = max(j - 1, 0)
    j1 = min(j + 1, wc - 1)
    one = np.float32(1)
    zero = np.float32(0)
    dxx = (pos[i, j1, 0] - pos[i, j0, 0]) * inv_x if j1 > j0 else one
    dyx = (pos[i, j1, 1] - pos[i, j0, 1]) * inv_x if j1 > j0 else zero
    dxy = (pos[i1, j, 0] - pos[i0, j, 0]) * inv_y if i1 > i0 else zero
    dyy = (pos[i1, j, 1] - pos[i0, j, 1]) * inv_y if i1 > i0 else one
    det = min(max(dxx * dyy - dxy * dyx, zero), one)
    return det * det if alive[i, j] else zero


@njit(cache=True, nogil=True, fastmath=True)
def blend_weights(
    pos_a: np.ndarray,
    alive_a: np.ndarray,
    weight_a: float,
    pos_b: np.ndarray,
    alive_b: np.ndarray,
    weight_b: float,
    spacing: float,
    rho: np.ndarray,
    rho_step: float,
    floor: float,
    out: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    row_start: int,
    row_stop: int,
) -> None:
    """Nodes lo[i] <= j < hi[i] of rows [row_start, row_stop): the share of branch a (out[..., 0])
    and the weights of the two branches' texture bands (out[..., 1], out[..., 2]).

    The branches' time weights are scaled by how much detail each keeps there (:func:`_stretch`,
    plus ``floor`` so that two equally smeared branches fall back to the time weights). The gain
    keeps the texture band's variance when two branches are averaged (Heitz and Neyret 2018):
    each branch's texture, scaled by what it keeps (ka, kb), gives Var(a ka A + b kb B) =
    a^2 ka^2 + b^2 kb^2 + 2ab ka kb rho for unit-variance bands with correlation rho, rescaled to
    a ka^2 + b kb^2; rho is the photo's own texture autocorrelation at the distance between the
    two branches' source points (``rho`` sampled every ``rho_step`` px), so nothing is boosted
    where the branches agree.
    """
    hc, wc = pos_a.shape[0], pos_a.shape[1]
    wa0 = np.float32(weight_a)
    wb0 = np.float32(weight_b)
    fl = np.float32(floor)
    inv_step = np.float32(1.0 / rho_step)
    last = rho.shape[0] - 1
    one = np.float32(1)
    central = np.float32(0.5 / spacing)
    edge = np.float32(1.0 / spacing)
    for i in range(row_start, row_stop):
        inv_y = central if 0 < i < hc - 1 else edge
        for j in range(lo[i], hi[i]):
            inv_x = central if 0 < j < wc - 1 else edge
            sa = _stretch(pos_a, alive_a, i, j, inv_x, inv_y)
            sb = _stretch(pos_b, alive_b, i, j, inv_x, inv_y)
            a = wa0 * (sa + fl)
            b = wb0 * (sb + fl)
            # Each branch's texture counts in full: scaling it by what the branch keeps (its
            # Jacobian) was measured to lose detail without removing the patterns of smeared areas.
            ka = one
            kb = one
            share = a / (a + b)
            dx = pos_a[i, j, 0] - pos_b[i, j, 0]
            dy = pos_a[i, j, 1] - pos_b[i, j, 1]
            u = min(np.sqrt(dx * dx + dy * dy) * inv_step, np.float32(last))
            k = min(int(u), last - 1)
            f = u - np.float32(k)
            r = (one - f) * rho[k] + f * rho[k + 1]
            rest = one - share
            var = share * share * ka * ka + rest * rest * kb * kb + np.float32(2) * share * rest * ka * kb * r
            target = share * ka * ka + rest * kb * kb
            gain = np.sqrt(target / var) if var > np.float32(1e-6) else np.float32(0)
            gain = min(gain, np.float32(2))
            out[i, j, 0] = share
            out[i, j, 1] = share * ka * gain
            out[i, j, 2] = rest * kb * gain


@njit(cache=True, nogil=True, fastmath=True)
def blend_rows(
    low_a: np.ndarray,
    high_a: np.ndarray,
    low_b: np.ndarray,
    high_b: np.ndarray,
    two: bool,
    weights: np.ndarray,
    col0: np.ndarray,
    colf: np.ndarray,
    row0: np.ndarray,
    rowf: np.ndarray,
    image: np.ndarray,
    keep: np.ndarray,
    top: int,
    left: int,
    out: np.ndarray,
    row_start: int,
    row_stop: int,
) -> None:
    """Rows [row_start, row_stop) of the region: out = a*low_a + (1-a)*low_b + ga*high_a + gb*high_b.

    low_* and high_* (hr, wr, 3) uint8 are the photo's two bands sampled by each branch (the high
    band stored + 128); (a, ga, gb) come from the node grid ``weights``, interpolated with the row/column
    tables (node index, fraction). With one branch (``two`` False) this is low_a + high_a, the
    photo's own pixels wherever the map is the identity. Pixels where ``keep`` is set get ``image``.
    """
    hh, ww = image.shape[0], image.shape[1]
    wr = low_a.shape[1]
    wc = weights.shape[1]
    one = np.float32(1)
    half = np.float32(0.5)
    for y in range(row_start, row_stop):
        gy = top + y
        if gy >= hh:
            break
        i0 = row0[y]
        i1 = min(i0 + 1, weights.shape[0] - 1)
        fy = rowf[y]
        for x in range(wr):
            gx = left + x
            if gx >= ww:
                break
            if keep[gy, gx]:
                for k in range(3):
                    out[gy, gx, k] = image[gy, gx, k]
                continue
            if two:
                j0 = col0[x]
                j1 = min(j0 + 1, wc - 1)
                fx = colf[x]
                p = (one - fx) * (one - fy)
                q = fx * (one - fy)
                r = (one - fx) * fy
                s = fx * fy
                a = p * weights[i0, j0, 0] + q * weights[i0, j1, 0]
                a += r * weights[i1, j0, 0] + s * weights[i1, j1, 0]
                ga = p * weights[i0, j0, 1] + q * weights[i0, j1, 1]
                ga += r * weights[i1, j0, 1] + s * weights[i1, j1, 1]
                gb = p * weights[i0, j0, 2] + q * weights[i0, j1, 2]
                gb += r * weights[i1, j0, 2] + s * weights[i1, j1, 2]
                b = one - a
                c = np.float32(128)
                for k in range(3):
                    low = a * np.float32(low_a[y, x, k]) + b * np.float32(low_b[y, x, k])
                    high = ga * (np.float32(high_a[y, x, k]) - c) + gb * (np.float32(high_b[y, x, k]) - c)
                    v = low + high + half
                    out[gy, gx, k] = 0 if v < 0 else (255 if v >= 255 else np.uint8(v))
            else:
                for k in range(3):
                    v = np.int32(low_a[y, x, k]) + np.int32(high_a[y, x, k]) - 128
                    out[gy, gx, k] = 0 if v < 0 else (255 if v > 255 else np.uint8(v))
