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

from stillmotion.motion.eulerian.render import STRETCH_FLOOR, EulerianWarp

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


def _stretch(pos: torch.Tensor, alive: torch.Tensor, spacing: float) -> torch.Tensor:
    def diff(axis: int) -> torch.Tensor:
        n = pos.shape[axis]
        if n == 1:
            out = torch.zeros_like(pos)
            out[..., axis ^ 1] = 1.0  # identity along a one-node axis: d x/d x = 1 for axis 1
            return out
        idx = torch.arange(n)
        hi, lo = (idx + 1).clamp(max=n - 1), (idx - 1).clamp(min=0)
        span = ((hi - lo).float() * spacing).view([-1 if a == axis else 1 for a in range(2)] + [1])
        return (pos.index_select(axis, hi) - pos.index_select(axis, lo)) / span

    along_x, along_y = diff(1), diff(0)
    det = along_x[..., 0] * along_y[..., 1] - along_y[..., 0] * along_x[..., 1]
    det = det.clamp(0, 1)
    return torch.where(alive, det * det, torch.zeros_like(det))


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

    def sample(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        grid = state[0]
        if self.s > 1:
            up = F.interpolate(
                grid.permute(2, 0, 1)[None], size=(self.hc * self.s, self.wc * self.s), mode="bilinear",
                align_corners=False,
            )  # fmt: skip
            grid = up[0].permute(1, 2, 0)
        x, y = grid[..., 0], grid[..., 1]
        low = torch.round(_bilinear(self.low, x, y))
        h, w = self.high.shape[:2]
        high = self.high[torch.round(y).long().clamp(0, h - 1), torch.round(x).long().clamp(0, w - 1)]
        return low, high

    def weights(self, a: State, wa: float, b: State, wb: float) -> torch.Tensor:
        sa, sb = _stretch(*a, float(self.s)), _stretch(*b, float(self.s))
        ca = wa * (sa + STRETCH_FLOOR)
        cb = wb * (sb + STRETCH_FLOOR)
        ka = kb = torch.ones_like(sa)  # the fast kernel counts each branch's texture in full
        share = ca / (ca + cb)
        last = len(self.rho) - 1
        u = (torch.linalg.vector_norm(a[0] - b[0], dim=-1) / self.warp.rho_step).clamp(max=last)
        k = torch.floor(u).long().clamp(max=last - 1)
        frac = u - k
        r = (1 - frac) * self.rho[k] + frac * self.rho[k + 1]
        rest = 1 - share
        var = share**2 * ka**2 + rest**2 * kb**2 + 2 * share * rest * ka * kb * r
        target = share * ka**2 + rest * kb**2
        gain = torch.where(var > 1e-6, torch.sqrt(target / var.clamp(min=1e-6)), torch.zeros_like(var))
        gain = gain.clamp(max=2)
        return torch.stack([share, share * ka * gain, rest * kb * gain], 0)

    def render(self, a: State, wa: float, b: State | None, wb: float) -> np.ndarray:
        warp = self.warp
        out = torch.from_numpy(warp.image.copy())
        if b is not None and wa > 0 and wb > 0:
            pix = self.weights(a, wa, b, wb)[None]
            if self.s > 1:  # node values at every pixel, as the nodes' bilinear interpolation
                pix = F.interpolate(pix, size=(self.hc * self.s, self.wc * self.s), mode="bilinear",
                                    align_corners=False)  # fmt: skip
            share, ga, gb = (pix[0, k][..., None] for k in range(3))
            (la, ha), (lb, hb) = self.sample(a), self.sample(b)
            value = share * la + (1 - share) * lb + ga * (ha - 128) + gb * (hb - 128)
        else:
            la, ha = self.sample(b if (b is not None and wb > 0) else a)
            value = la + ha - 128
        value = torch.floor(value + 0.5).clamp(0, 255).to(torch.uint8)
        h, w = out.shape[:2]
        top, left = warp.top, warp.left
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
            weight = 1.0 - abs(2.0 * age / period - 1.0)
        yield warp.image.copy() if warp.n_moving == 0 else plain.render(first, 1.0 - weight, second, weight)
