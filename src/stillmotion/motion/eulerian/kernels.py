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
def _cell_stretch(
    pos: np.ndarray, alive: np.ndarray, i0: int, i1: int, j0: int, j1: int, inv_x: float, inv_y: float
) -> float:
    """How little a gather map magnifies the photo over the cell of nodes rows (i0, i1) x columns
    (j0, j1): the square of the smaller singular value of its Jacobian (source distance per output
    distance, in the direction stretched most), clipped to [0, 1]; 0 for a folded map
    (determinant <= 0) or a dead trace.

    A cell's forward differences, averaged over its two rows / columns, rather than each node's
    own central differences: where traces bunch up (content converging on a mask's edge), the
    per-node determinant alternates from node to node and so did the branch weights (ladders).
    ``inv_*`` is 1 / the distance between the cell's columns / rows (0: a one-node axis, taken
    as the identity).
    """
    one = np.float32(1)
    zero = np.float32(0)
    half = np.float32(0.5)
    hx = half * inv_x
    hy = half * inv_y
    a = (pos[i0, j1, 0] - pos[i0, j0, 0] + pos[i1, j1, 0] - pos[i1, j0, 0]) * hx
    c = (pos[i0, j1, 1] - pos[i0, j0, 1] + pos[i1, j1, 1] - pos[i1, j0, 1]) * hx
    b = (pos[i1, j0, 0] - pos[i0, j0, 0] + pos[i1, j1, 0] - pos[i0, j1, 0]) * hy
    d = (pos[i1, j0, 1] - pos[i0, j0, 1] + pos[i1, j1, 1] - pos[i0, j1, 1]) * hy
    a = a if inv_x > zero else one
    c = c if inv_x > zero else zero
    b = b if inv_y > zero else zero
    d = d if inv_y > zero else one
    det = a * d - b * c
    frob = a * a + b * b + c * c + d * d
    small = min(max(half * (frob - np.sqrt(max(frob * frob - np.float32(4) * det * det, zero))), zero), one)
    ok = alive[i0, j0] & alive[i0, j1] & alive[i1, j0] & alive[i1, j1] & (det > zero)
    return small if ok else zero


@njit(cache=True, nogil=True, fastmath=True)
def cell_stretch(
    pos_a: np.ndarray,
    alive_a: np.ndarray,
    pos_b: np.ndarray,
    alive_b: np.ndarray,
    spacing: float,
    out_a: np.ndarray,
    out_b: np.ndarray,
    out_dist: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    row_start: int,
    row_stop: int,
) -> None:
    """Cells lo[i] <= j < hi[i] of cell rows [row_start, row_stop) (cell (i, j): nodes 2i, 2i + 1 x
    2j, 2j + 1; the last of an odd count takes the node before it): how little each branch
    magnifies there (:func:`_cell_stretch`) and the distance between the two branches' source
    points (the cells' centres)."""
    hc, wc = pos_a.shape[0], pos_a.shape[1]
    quarter = np.float32(0.25)
    for ci in range(row_start, row_stop):
        i1 = min(2 * ci + 1, hc - 1)
        i0 = max(i1 - 1, 0)
        inv_y = np.float32(1.0 / spacing) if i1 > i0 else np.float32(0)
        for cj in range(lo[ci], hi[ci]):
            j1 = min(2 * cj + 1, wc - 1)
            j0 = max(j1 - 1, 0)
            inv_x = np.float32(1.0 / spacing) if j1 > j0 else np.float32(0)
            out_a[ci, cj] = _cell_stretch(pos_a, alive_a, i0, i1, j0, j1, inv_x, inv_y)
            out_b[ci, cj] = _cell_stretch(pos_b, alive_b, i0, i1, j0, j1, inv_x, inv_y)
            dx = pos_a[i0, j0, 0] + pos_a[i0, j1, 0] + pos_a[i1, j0, 0] + pos_a[i1, j1, 0]
            dx -= pos_b[i0, j0, 0] + pos_b[i0, j1, 0] + pos_b[i1, j0, 0] + pos_b[i1, j1, 0]
            dy = pos_a[i0, j0, 1] + pos_a[i0, j1, 1] + pos_a[i1, j0, 1] + pos_a[i1, j1, 1]
            dy -= pos_b[i0, j0, 1] + pos_b[i0, j1, 1] + pos_b[i1, j0, 1] + pos_b[i1, j1, 1]
            out_dist[ci, cj] = quarter * np.sqrt(dx * dx + dy * dy)


@njit(cache=True, nogil=True, fastmath=True)
def blend_weights(
    stretch_a: np.ndarray,
    stretch_b: np.ndarray,
    dist: np.ndarray,
    weight_a: float,
    weight_b: float,
    rho: np.ndarray,
    rho_step: float,
    floor: float,
    scatter_lo: float,
    scatter_hi: float,
    scatter_px: float,
    scatter_fade: float,
    out: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    row_start: int,
    row_stop: int,
) -> None:
    """Cells lo[i] <= j < hi[i] of rows [row_start, row_stop): the share of branch a (out[..., 0]),
    the weights of the two branches' texture bands (out[..., 1], out[..., 2]) and how far each
    branch scatters its texture reads (out[..., 3], out[..., 4], source pixels).

    ``stretch_*`` is how little each branch magnifies the photo (squared smaller singular value
    of its Jacobian, smoothed over neighbouring cells). The branches' time weights are scaled by
    it (plus ``floor`` so that two equally smeared branches fall back to the time weights): a
    branch that smears a small piece of the photo over a large area gives way to the other.
    Where a branch magnifies, its texture read at the nearest source pixel would repeat each
    pixel in blocks, a regular stair pattern: its reads scatter, up to ``scatter_px`` source
    pixels, as the stretch falls from ``scatter_hi`` to ``scatter_lo``, so that neighbouring
    output pixels draw different pixels of the same neighbourhood (the photo's own texture and
    histogram, without the blocks). The gain keeps the texture band's variance when two
    branches are averaged (Heitz and Neyret 2018): Var(a A + b B) = a^2 + b^2 + 2ab rho for
    unit-variance bands with correlation rho, rescaled to 1; rho is the photo's own texture
    autocorrelation at the distance between the two branches' source points (``rho`` sampled
    every ``rho_step`` px), so nothing is boosted where they agree.
    """
    wa0 = np.float32(weight_a)
    wb0 = np.float32(weight_b)
    fl = np.float32(floor)
    inv_step = np.float32(1.0 / rho_step)
    last = rho.shape[0] - 1
    one = np.float32(1)
    zero = np.float32(0)
    s_hi = np.float32(scatter_hi)
    reach = np.float32(scatter_px / (scatter_hi - scatter_lo))
    radius = np.float32(scatter_px)
    # a branch's reads scatter fully once the other branch weighs scatter_fade: a lone branch's do not
    # scatter, so a branch's texture does not change at once when another joins it (forward restarts)
    fade_a = np.float32(min(weight_b / scatter_fade, 1.0))
    fade_b = np.float32(min(weight_a / scatter_fade, 1.0))
    for i in range(row_start, row_stop):
        for j in range(lo[i], hi[i]):
            sa = stretch_a[i, j]
            sb = stretch_b[i, j]
            a = wa0 * (sa + fl)
            b = wb0 * (sb + fl)
            share = a / (a + b)
            u = min(dist[i, j] * inv_step, np.float32(last))
            k = min(int(u), last - 1)
            f = u - np.float32(k)
            r = (one - f) * rho[k] + f * rho[k + 1]
            rest = one - share
            var = share * share + rest * rest + np.float32(2) * share * rest * r
            gain = min(np.sqrt(one / var), np.float32(2)) if var > np.float32(1e-6) else zero
            out[i, j, 0] = share
            out[i, j, 1] = share * gain
            out[i, j, 2] = rest * gain
            out[i, j, 3] = min(max((s_hi - sa) * reach, zero), radius) * fade_a
            out[i, j, 4] = min(max((s_hi - sb) * reach, zero), radius) * fade_b


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _scatter(gx: int, gy: int, seed: int) -> tuple:
    """A fixed pseudo-random offset in [-1, 1]^2 for output pixel (gx, gy) (an integer hash)."""
    mask = np.int64(0xFFFFFFFF)
    h = (np.int64(gx) * np.int64(0x9E3779B1) + np.int64(gy) * np.int64(0x85EBCA77) + np.int64(seed)) & mask
    h ^= h >> 16
    h = (h * np.int64(0x7FEB352D)) & mask
    h ^= h >> 15
    h = (h * np.int64(0x2C1B3C6D)) & mask
    h ^= h >> 16
    scale = np.float32(2.0 / 65535.0)
    return np.float32(h & 0xFFFF) * scale - np.float32(1), np.float32(h >> 16) * scale - np.float32(1)


@njit(cache=True, nogil=True, fastmath=True)
def scatter_map(
    maps: np.ndarray,
    weights: np.ndarray,
    channel: int,
    seed: int,
    col0: np.ndarray,
    colf: np.ndarray,
    row0: np.ndarray,
    rowf: np.ndarray,
    top: int,
    left: int,
) -> None:
    """Move ``maps`` (hr, wr, 2), in place, by the branch's scatter radius (``weights`` channel
    ``channel``, interpolated from the cells) times the fixed offset of each output pixel
    (:func:`_scatter`, pixel (left + x, top + y)); pixels of radius 0 keep their map."""
    hr, wr = maps.shape[0], maps.shape[1]
    wc = weights.shape[1]
    one = np.float32(1)
    zero = np.float32(0)
    first = col0[0]
    span = min(col0[wr - 1] + 2, wc) - first
    row = np.empty(span, np.float32)  # this row's radius at each cell column, between cell rows
    for y in range(hr):
        i0 = row0[y]
        i1 = min(i0 + 1, weights.shape[0] - 1)
        fy = rowf[y]
        any_row = False
        for j in range(span):
            row[j] = (one - fy) * weights[i0, first + j, channel] + fy * weights[i1, first + j, channel]
            any_row |= row[j] > zero
        if not any_row:
            continue
        for x in range(wr):
            j0 = col0[x] - first
            j1 = min(j0 + 1, span - 1)
            fx = colf[x]
            radius = (one - fx) * row[j0] + fx * row[j1]
            if radius > zero:  # the hash only where the branch magnifies
                ox, oy = _scatter(left + x, top + y, seed)
                maps[y, x, 0] += radius * ox
                maps[y, x, 1] += radius * oy


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
    band stored + 128); (a, ga, gb) come from the cell grid ``weights``, interpolated with the
    row/column tables (cell index, fraction). With one branch (``two`` False) this is
    low_a + high_a, the photo's own pixels wherever the map is the identity. Pixels where
    ``keep`` is set get ``image``.
    """
    hh, ww = image.shape[0], image.shape[1]
    wr = low_a.shape[1]
    wc = weights.shape[1]
    one = np.float32(1)
    half = np.float32(0.5)
    c = np.float32(128)
    first = col0[0]
    span = min(col0[wr - 1] + 2, wc) - first
    row = np.empty((span, 3), np.float32)  # the weights of this row's cells, between cell rows
    for y in range(row_start, row_stop):
        gy = top + y
        if gy >= hh:
            break
        if two:
            i0 = row0[y]
            i1 = min(i0 + 1, weights.shape[0] - 1)
            fy = rowf[y]
            for j in range(span):
                for k in range(3):
                    row[j, k] = (one - fy) * weights[i0, first + j, k] + fy * weights[i1, first + j, k]
        for x in range(wr):
            gx = left + x
            if gx >= ww:
                break
            if keep[gy, gx]:
                for k in range(3):
                    out[gy, gx, k] = image[gy, gx, k]
                continue
            if two:
                j0 = col0[x] - first
                j1 = min(j0 + 1, span - 1)
                fx = colf[x]
                a = (one - fx) * row[j0, 0] + fx * row[j1, 0]
                ga = (one - fx) * row[j0, 1] + fx * row[j1, 1]
                gb = (one - fx) * row[j0, 2] + fx * row[j1, 2]
                b = one - a
                for k in range(3):
                    low = a * np.float32(low_a[y, x, k]) + b * np.float32(low_b[y, x, k])
                    high = ga * (np.float32(high_a[y, x, k]) - c) + gb * (np.float32(high_b[y, x, k]) - c)
                    v = low + high + half
                    out[gy, gx, k] = 0 if v < 0 else (255 if v >= 255 else np.uint8(v))
            else:
                for k in range(3):
                    v = np.int32(low_a[y, x, k]) + np.int32(high_a[y, x, k]) - 128
                    out[gy, gx, k] = 0 if v < 0 else (255 if v > 255 else np.uint8(v))
