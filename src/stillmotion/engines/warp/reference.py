"""A plain PyTorch version of the Eulerian renderer's per-frame work, to check the fast one.

It follows the textbook recipe with whole-array operations: Euler steps by gathering the field at
the four neighbours, the Jacobian by finite differences, bilinear and nearest sampling by indexing,
the blend in float. For a loop it integrates the forward-reading branch once and *stores every
step's traces* (memory grows with the number of frames), then reads them in reverse. It shares the
set-up (nodes, bands, autocorrelation, still pixels, cycle) with
:class:`~stillmotion.motion.eulerian.render.EulerianWarp`, so its frames should match the fast
renderer's up to float rounding (a grey level where a sum lands on a rounding boundary).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from stillmotion.motion.eulerian.render import SCATTER_FADE, STRETCH_FLOOR, TEXTURE_SCATTER, EulerianWarp

State = tuple[torch.Tensor, torch.Tensor]


def _bilinear(values: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """values (H, W, C) read at (x, y), clamped to the frame (replicated border)."""
    h, w = values.shape[:2]
    x, y = x.clamp(0, w - 1), y.clamp(0, h - 1)
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    return (
        (1 - fx) * (1 - fy) * values[y0, x0]
        + fx * (1 - fy) * values[y0, x1]
        + (1 - fx) * fy * values[y1, x0]
        + fx * fy * values[y1, x1]
    )


def _euler(state: State, field: torch.Tensor, moving: torch.Tensor, sign: float) -> State:
    pos, alive = state[0].clone(), state[1].clone()
    h, w = field.shape[:2]
    x, y = pos[..., 0], pos[..., 1]
    alive &= (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    new = pos + sign * _bilinear(field, x, y)
    nx, ny = new[..., 0], new[..., 1]
    inside = (nx >= 0) & (nx <= w - 1) & (ny >= 0) & (ny <= h - 1)
    onto = moving[(ny.clamp(0, h - 1) + 0.5).long(), (nx.clamp(0, w - 1) + 0.5).long()]
    take = alive & inside & onto
    return torch.where(take[..., None], new, pos), alive & inside


def _compose(state: State, field: torch.Tensor, nodes: torch.Tensor) -> State:
    """P'(q) = P(q - M(q)) on the node grid."""
    h, w = field.shape[:2]
    hc, wc = nodes.shape[:2]
    m = _bilinear(field, nodes[..., 0], nodes[..., 1])
    p = nodes - m
    inside = (p[..., 0] >= 0) & (p[..., 0] <= w - 1) & (p[..., 1] >= 0) & (p[..., 1] <= h - 1)
    sx = (nodes[0, -1, 0] - nodes[0, 0, 0]) / max(wc - 1, 1) if wc > 1 else torch.tensor(1.0)
    sy = (nodes[-1, 0, 1] - nodes[0, 0, 1]) / max(hc - 1, 1) if hc > 1 else torch.tensor(1.0)
    gx = ((p[..., 0] - nodes[0, 0, 0]) / sx).clamp(0, wc - 1)
    gy = ((p[..., 1] - nodes[0, 0, 1]) / sy).clamp(0, hc - 1)
    pos = _bilinear(state[0], gx, gy)
    near_j = torch.where(gx - torch.floor(gx) < 0.5, torch.floor(gx), (torch.floor(gx) + 1).clamp(max=wc - 1))
    near_i = torch.where(gy - torch.floor(gy) < 0.5, torch.floor(gy), (torch.floor(gy) + 1).clamp(max=hc - 1))
    alive = inside & state[1] & state[1][near_i.long(), near_j.long()]
    return pos, alive


def _cell_index(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both node indices of each cell along an axis of ``count`` nodes (the last of an odd count
    takes the node before it)."""
    k1 = (2 * torch.arange(-(-count // 2)) + 1).clamp(max=count - 1)
    return (k1 - 1).clamp(min=0), k1


def _cell_stretch(
    pos: torch.Tensor, alive: torch.Tensor, spacing: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per cell of 2 x 2 nodes: the squared smaller singular value of the map's Jacobian (forward
    differences averaged over the cell), clipped to [0, 1], 0 where folded or dead; and the
    cell's source point."""
    i0, i1 = _cell_index(pos.shape[0])
    j0, j1 = _cell_index(pos.shape[1])
    p00, p01 = pos[i0][:, j0], pos[i0][:, j1]
    p10, p11 = pos[i1][:, j0], pos[i1][:, j1]
    along_x = (p01 - p00 + p11 - p10) * (0.5 / spacing)
    along_y = (p10 - p00 + p11 - p01) * (0.5 / spacing)
    if pos.shape[1] == 1:  # a one-node axis: the identity along it
        along_x = torch.zeros_like(along_x)
        along_x[..., 0] = 1.0
    if pos.shape[0] == 1:
        along_y = torch.zeros_like(along_y)
        along_y[..., 1] = 1.0
    a, c = along_x[..., 0], along_x[..., 1]
    b, d = along_y[..., 0], along_y[..., 1]
    det = a * d - b * c
    frob = a * a + b * b + c * c + d * d
    small = (0.5 * (frob - torch.sqrt((frob * frob - 4 * det * det).clamp(min=0)))).clamp(0, 1)
    ok = alive[i0][:, j0] & alive[i0][:, j1] & alive[i1][:, j0] & alive[i1][:, j1] & (det > 0)
    return torch.where(ok, small, torch.zeros_like(small)), (p00 + p01 + p10 + p11) * 0.25


def _smooth(raw: torch.Tensor) -> torch.Tensor:
    """The 3 x 3 minimum (cells beyond the grid ignored), then the 3 x 3 mean (mirrored border)."""
    low = -F.max_pool2d(-raw[None, None], 3, stride=1, padding=1)
    return F.avg_pool2d(F.pad(low, (1, 1, 1, 1), mode="reflect"), 3, stride=1)[0, 0]


def _scatter(gx: torch.Tensor, gy: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed offset in [-1, 1]^2 of output pixels (gx, gy), the same integer hash as the kernel's."""
    mask = 0xFFFFFFFF
    h = (gx * 0x9E3779B1 + gy * 0x85EBCA77 + seed) & mask
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & mask
    h = h ^ (h >> 15)
    h = (h * 0x2C1B3C6D) & mask
    h = h ^ (h >> 16)
    scale = 2.0 / 65535.0
    return (h & 0xFFFF).float() * scale - 1, (h >> 16).float() * scale - 1


class _Plain:
    def __init__(self, warp: EulerianWarp) -> None:
        self.warp = warp
        self.hc, self.wc, self.s = warp.hc, warp.wc, warp.spacing
        self.nodes = torch.from_numpy(warp.nodes.copy())
        self.low = torch.from_numpy(warp.low).float()
        self.high = torch.from_numpy(warp.high).float()
        self.rho = torch.from_numpy(warp.rho)
        sequence = warp.field if warp.field.ndim == 4 else warp.field[None]
        self.fields = [torch.from_numpy(f) for f in sequence]
        self.moving = torch.from_numpy(~warp.keep)

    def start(self) -> State:
        return self.nodes.clone(), torch.ones(self.hc, self.wc, dtype=torch.bool)

    def step(self, state: State, sign: float, index: int) -> State:
        if len(self.fields) > 1 or self.warp.field.ndim == 4:
            return _compose(state, self.fields[min(index, len(self.fields) - 1)], self.nodes)
        return _euler(state, self.fields[0], self.moving, sign)

    def maps(self, state: State) -> torch.Tensor:
        grid = state[0]
        if self.s > 1:
            up = F.interpolate(
                grid.permute(2, 0, 1)[None], size=(self.hc * self.s, self.wc * self.s), mode="bilinear",
                align_corners=False,
            )  # fmt: skip
            grid = up[0].permute(1, 2, 0)
        return grid

    def low_at(self, maps: torch.Tensor) -> torch.Tensor:
        return torch.round(_bilinear(self.low, maps[..., 0], maps[..., 1]))

    def high_at(self, maps: torch.Tensor) -> torch.Tensor:
        h, w = self.high.shape[:2]
        x = torch.floor(maps[..., 0].clamp(0, w - 1) + 0.5).long()
        y = torch.floor(maps[..., 1].clamp(0, h - 1) + 0.5).long()
        return self.high[y, x]

    def weights(self, a: State, wa: float, b: State, wb: float) -> torch.Tensor:
        (raw_a, qa), (raw_b, qb) = _cell_stretch(*a, float(self.s)), _cell_stretch(*b, float(self.s))
        sa, sb = _smooth(raw_a), _smooth(raw_b)
        ca = wa * (sa + STRETCH_FLOOR)
        cb = wb * (sb + STRETCH_FLOOR)
        share = ca / (ca + cb)
        last = len(self.rho) - 1
        u = (torch.linalg.vector_norm(qa - qb, dim=-1) / self.warp.rho_step).clamp(max=last)
        k = torch.floor(u).long().clamp(max=last - 1)
        frac = u - k
        r = (1 - frac) * self.rho[k] + frac * self.rho[k + 1]
        rest = 1 - share
        var = share**2 + rest**2 + 2 * share * rest * r
        gain = torch.where(var > 1e-6, torch.sqrt(1 / var.clamp(min=1e-6)), torch.zeros_like(var))
        gain = gain.clamp(max=2)
        lo, hi, radius = TEXTURE_SCATTER
        scatter_a = ((hi - sa) * (radius / (hi - lo))).clamp(0, radius) * min(wb / SCATTER_FADE, 1.0)
        scatter_b = ((hi - sb) * (radius / (hi - lo))).clamp(0, radius) * min(wa / SCATTER_FADE, 1.0)
        return torch.stack([share, share * gain, rest * gain, scatter_a, scatter_b], 0)

    def render(self, a: State, wa: float, b: State | None, wb: float) -> np.ndarray:
        warp = self.warp
        out = torch.from_numpy(warp.image.copy())
        top, left = warp.top, warp.left
        if b is not None and wa > 0 and wb > 0:
            cells = self.weights(a, wa, b, wb)[None]
            # cell values at every pixel, as the cells' bilinear interpolation
            pix = F.interpolate(cells, size=(cells.shape[2] * 2 * self.s, cells.shape[3] * 2 * self.s),
                                mode="bilinear", align_corners=False)  # fmt: skip
            pix = pix[0, :, : self.hc * self.s, : self.wc * self.s]
            share, ga, gb = (pix[k][..., None] for k in range(3))
            ma, mb = self.maps(a), self.maps(b)
            gy, gx = torch.meshgrid(
                torch.arange(ma.shape[0]) + top, torch.arange(ma.shape[1]) + left, indexing="ij"
            )
            ha = self.high_at(ma + pix[3][..., None] * torch.stack(_scatter(gx, gy, 0), -1))
            hb = self.high_at(mb + pix[4][..., None] * torch.stack(_scatter(gx, gy, 1), -1))
            la, lb = self.low_at(ma), self.low_at(mb)
            value = share * la + (1 - share) * lb + ga * (ha - 128) + gb * (hb - 128)
        else:
            maps = self.maps(b if (b is not None and wb > 0) else a)
            value = self.low_at(maps) + self.high_at(maps) - 128
        value = torch.floor(value + 0.5).clamp(0, 255).to(torch.uint8)
        h, w = out.shape[:2]
        region = value[: h - top, : w - left]
        rh, rw = region.shape[:2]
        keep = torch.from_numpy(warp.keep[top : top + rh, left : left + rw])
        box = out[top : top + rh, left : left + rw]
        out[top : top + rh, left : left + rw] = torch.where(keep[..., None], box, region)
        return out.numpy()


def reference_frames(warp: EulerianWarp) -> Iterator[np.ndarray]:
    """Yield the same frames as ``warp.frames()``, computed the straightforward way."""
    plain = _Plain(warp)
    n = warp.n_frames
    last = n if warp.include_end else n - 1
    yield warp.image.copy()
    if warp.loop:
        p = warp.period
        ahead = [plain.start()]
        for k in range(p - 1):
            ahead.append(plain.step(ahead[-1], 1.0, k))
        back = plain.start()
        for t in range(1, last + 1):
            u = t % p
            if u == 0 or warp.n_moving == 0:
                back = plain.start()
                yield warp.image.copy()
                continue
            back = plain.step(back, -1.0, t - 1)
            yield plain.render(back, 1.0 - u / p, ahead[p - u], u / p)
        return
    period, half = warp.cycle, warp.cycle // 2
    first = second = plain.start()
    for t in range(1, last + 1):
        first = plain.start() if t % period == 0 else plain.step(first, -1.0, t - 1)
        weight = 0.0
        if t >= half:
            age = (t - half) % period
            second = plain.start() if age == 0 else plain.step(second, -1.0, t - 1)
            tri = 1.0 - abs(2.0 * age / period - 1.0)
            weight = tri * tri * (3.0 - 2.0 * tri)
        yield warp.image.copy() if warp.n_moving == 0 else plain.render(first, 1.0 - weight, second, weight)
