"""Eulerian animation of a still photo (Holynski et al. 2021, "Animating Pictures with Eulerian
Motion Fields"), rendered so that the moving parts keep the photo's detail in every frame.

The method, as implemented here:

- **Gather, from the photo, once per frame.** A static motion field M (H, W, 2) in pixels per frame
  moves content along x_{k+1} = x_k + M(x_k). Frame t is rendered by tracing every output pixel q
  *back* t Euler steps, x_{k+1} = x_k - M(x_k) (M sampled bilinearly at the current position), and
  reading the original photo where the trace ends. Each frame is one resampling of the photo by
  the integrated displacement; no frame is ever made from another frame. Traces advance one step
  per frame and are never stored for all frames. A trace that leaves the frame keeps its last
  position inside it; a trace never steps onto a pixel that does not move (outside the mask). A
  sequence of fields (one per frame step, e.g. a real video's flows) is followed by composing
  gather maps instead: P_t(q) = P_{t-1}(q - M_{t-1}(q)).
- **Resampling that keeps the detail.** The photo is split once into a low band (Gaussian blur,
  sigma 1 px) and the rest (high band, the pixel-scale texture). The low band is sampled
  bilinearly, so shapes move smoothly by fractions of a pixel; the high band is sampled at the
  nearest pixel, so the texture's pixels are copied, never averaged away (a bilinear or bicubic
  resampling at half-pixel offsets removes the finest detail; measured in docs/warp-engine.md).
  The split is exact: where nothing moves, low + high is the photo, bit for bit.
- **Traces on a grid of nodes.** Traces run on a grid of nodes every ``spacing`` pixels (1 for
  small frames, 2 from about 512x512 to 1080p, 4 for 4K: the fields are smooth) and the maps are interpolated
  to every pixel before resampling.
- **Seamless loops** blend two branches (Holynski et al.'s symmetric splatting, here gathered):
  frame t of N reads the photo along a trace t steps back (weight 1 - t/N) and along a trace
  N - t steps forward (weight t/N). Frame 0 and frame N are the photo. The forward branch needs
  its traces in *decreasing* length (N-1, ..., 1) while integration runs forwards: a fixed budget
  of checkpoints (scaled with the frame size, bounded by the available memory) is kept and the
  segments between them are recomputed: memory stays constant whatever N is, for 1-2 extra Euler
  steps per frame.
- **Forward motion that keeps flowing** (not a loop): two phases, each restarted from the photo
  every ``cycle`` frames, half a cycle apart, cross-faded with triangle weights (the "flow map"
  technique of real-time water rendering). No trace is ever older than a cycle, so the region
  behind each arrow never empties: content keeps flowing in for any number of frames. Frame 0 is
  the photo.
- **Blending that keeps the detail.** Averaging two different textures halves the detail's
  variance. The branches' weights are scaled by how much of the photo's detail each one keeps at
  a pixel (its map's Jacobian: a smeared trace, behind an arrow or at the frame's edge, gives way
  to the other), and the high band of the blend is rescaled to keep its variance (Heitz and
  Neyret 2018, histogram-preserving blending), with the photo's own detail autocorrelation telling
  how alike the two branches are (no boost where they read nearby pixels). The low band is blended linearly.
- **Strength** scales the speed (the field). **Mask:** the field is zero outside it. Every pixel
  whose motion is zero (all of them outside the mask) is copied from the photo, bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from stillmotion.errors import UserInputError
from stillmotion.motion.eulerian.kernels import (
    blend_rows,
    blend_weights,
    cell_stretch,
    compose_step,
    euler_rows,
    scatter_map,
)
from stillmotion.progress import progress_iter

# A trace that smears the photo gives way to the other branch; this much weight is left to each so
# that two equally smeared branches fall back to the time weights.
STRETCH_FLOOR = 0.02
LOW_SIGMA = 1.0  # px: the low band is what moves by fractions of a pixel
# Nearest-pixel ties (exact half-pixel positions) would round in alternating directions; a bias
# too small to change a bilinear sample by half a grey level settles them one way.
TIE_BIAS = 1.0 / 1024
CHECKPOINT_STATES = 48  # 24 checkpoints x 24 steps: two passes up to 576 frames
MIN_CHECKPOINT_MB = 64.0
# Where a branch's map magnifies the photo (the squared smaller singular value of its Jacobian
# below 0.6^2, i.e. more than 1.7x), its texture reads scatter up to 1 source pixel (reached at
# 4x): read at the nearest pixel, each texture pixel would otherwise repeat in blocks.
TEXTURE_SCATTER = (0.25**2, 0.6**2, 1.0)
# A branch's reads scatter in full once the other branch's time weight reaches this, less before: a
# lone branch reads unscattered, and when forward motion restarts a phase, the other phase's texture
# changes over the frames the newcomer takes to reach this weight instead of at once.
SCATTER_FADE = 0.1
SMOOTH_KERNEL = np.ones((3, 3), np.uint8)
SMOOTH_SIZE = (3, 3)
SMOOTH_REACH = 2  # cells: the minimum's and the average's radii
# The region is rendered in bands of this many rows, each only as wide as its moving pixels: a
# mask's bounding box holds 2-3 times more pixels than the mask.
BAND_ROWS = 32
# Below this many nodes, handing work to a second thread costs more than it saves.
_MIN_SPLIT = 4096

State = tuple[np.ndarray, np.ndarray]  # positions (n, 2) float32, alive (n,) bool


def check_warp_inputs(image: np.ndarray, field: np.ndarray, mask: np.ndarray | None = None) -> None:
    """Raise :class:`UserInputError` when image, field or mask cannot be animated together."""
    if not (
        isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    ):
        got = f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}"
        raise UserInputError(f"image must be a uint8 (H, W, 3) RGB array, got {got}")
    h, w = image.shape[:2]
    ok = isinstance(field, np.ndarray) and (
        field.shape == (h, w, 2) or (field.ndim == 4 and field.shape[1:] == (h, w, 2) and len(field) > 0)
    )
    if not ok:
        raise UserInputError(
            f"motion field must have shape (H, W, 2) = ({h}, {w}, 2) to match the image "
            f"(or (F, {h}, {w}, 2) for one field per frame step), got {np.shape(field)}"
        )
    if not np.isfinite(field).all():
        raise UserInputError("motion field holds NaN or infinite values")
    if mask is not None and np.shape(mask) != (h, w):
        raise UserInputError(f"mask shape {np.shape(mask)} does not match the image ({h}, {w})")


class EulerianWarp:
    """Animate ``image`` along the ``field``; :meth:`frames` yields uint8 (H, W, 3) frames.

    Args:
        image: RGB uint8 (H, W, 3).
        field: float32 (H, W, 2), (dx, dy) pixels per frame at the image's resolution; or
            (F, H, W, 2), one field per frame step (e.g. a real video's optical flows: step t -> t+1
            uses field t, the last one repeats), forward animation only (``loop=False``).
        frames: number of frames N (>= 1). For a loop, N is also the period: frame N would equal
            frame 0, so frames 0..N-1 repeat seamlessly.
        loop: a seamless loop (default) or forward motion that keeps flowing.
        strength: speed factor applied to the field (0 gives a still video).
        mask: bool (H, W), True where things may move; everything outside is copied from ``image``.
        include_end: also yield frame N (equal to frame 0 for a loop); for checks and for players
            that want the closed loop.
        cycle: frames between two restarts of a forward phase (even, >= 4); a loop of more than
            twice as many frames repeats a shorter period (:func:`loop_period`). Default: the time
            the fastest content takes to cross a fifth of the frame, within 24-96 frames.
        checkpoint_mb: memory for the loop's checkpoints (fixed, whatever N is). Default: room for
            48 states (at least 64 MB), at most an eighth of the available memory.
        spacing: pixels between trace nodes (default by the moving region's size: 1 up to about
            0.2 megapixels of the moving region's bounding box, then 2, then 4 above about 2.6).
        threads: 1 or 2 (default: 2 when the machine has 2 or more cores).
    """

    def __init__(
        self,
        image: np.ndarray,
        field: np.ndarray,
        *,
        frames: int,
        loop: bool = True,
        strength: float = 1.0,
        mask: np.ndarray | None = None,
        include_end: bool = False,
        cycle: int | None = None,
        checkpoint_mb: float | None = None,
        spacing: int | None = None,
        threads: int | None = None,
    ) -> None:
        check_warp_inputs(image, field, mask)
        if not (isinstance(frames, int | np.integer) and frames >= 1):
            raise UserInputError(f"frames must be an integer >= 1, got {frames!r}")
        if not (math.isfinite(strength) and strength >= 0):
            raise UserInputError(f"strength must be a finite number >= 0, got {strength}")
        if field.ndim == 4 and loop:
            raise UserInputError("a per-frame motion field sequence animates forward only (loop=False)")
        if cycle is not None and not (isinstance(cycle, int | np.integer) and cycle >= 4 and cycle % 2 == 0):
            raise UserInputError(f"cycle must be an even integer >= 4, got {cycle!r}")
        if spacing is not None and spacing not in (1, 2, 4, 8):
            raise UserInputError(f"spacing must be 1, 2, 4 or 8, got {spacing!r}")
        self.image = np.ascontiguousarray(image)
        self.n_frames = int(frames)
        self.loop = bool(loop)
        self.include_end = bool(include_end)
        h, w = image.shape[:2]
        motion = np.ascontiguousarray(field, dtype=np.float32) * np.float32(strength)
        if mask is not None:
            motion[..., ~np.asarray(mask, bool), :] = 0.0
        self.field = motion  # (H, W, 2), or (F, H, W, 2): step t -> t+1 uses field[min(t, F - 1)]
        sequence = motion if motion.ndim == 4 else motion[None]
        moving = (sequence != 0).any(axis=(0, 3))
        self.keep = ~moving  # copied from the photo, bit for bit
        self._moving = np.ascontiguousarray(moving)
        self.n_moving = int(moving.sum())
        speed = np.hypot(sequence[..., 0], sequence[..., 1])
        self.max_speed = float(speed.max()) if self.n_moving else 0.0
        if cycle is None:
            cross = 0.2 * max(h, w) / max(self.max_speed, 1e-6)
            cycle = int(min(96, max(24, 2 * round(cross / 2))))
        self.cycle = int(cycle)
        self.period = loop_period(self.n_frames, self.cycle) if self.loop else self.n_frames

        if self.n_moving:
            ys, xs = np.nonzero(moving)
            top, bottom, left, right = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        else:
            top, bottom, left, right = 0, 1, 0, 1
        area = (bottom - top) * (right - left)
        if spacing is None:
            # every 2nd pixel from about 0.2 megapixels of region's bounding box: measured on
            # photos at 512x512, it keeps the detail within 0.013 and takes 3/4 of the trace work off
            spacing = 1 if area <= 2**17 + 2**16 else (2 if area <= 2**21 + 2**19 else 4)
        self.spacing = s = int(spacing)
        self.hc, self.wc = -(-(bottom - top) // s), -(-(right - left) // s)
        self.top, self.left = top, left
        # Node (i, j) sits at the centre of its s x s block of pixels, where bilinear resizing of the
        # node grid to the block's pixels expects it; clamped into the frame.
        node_x = left + (np.arange(self.wc, dtype=np.float32) + 0.5) * s - 0.5 + np.float32(TIE_BIAS)
        node_y = top + (np.arange(self.hc, dtype=np.float32) + 0.5) * s - 0.5 + np.float32(TIE_BIAS)
        self.nodes = np.empty((self.hc, self.wc, 2), np.float32)
        self.nodes[..., 0] = np.clip(node_x, 0, w - 1)[None, :]
        self.nodes[..., 1] = np.clip(node_y, 0, h - 1)[:, None]
        self.n_nodes = self.hc * self.wc
        # The blend weights live on cells of 2 x 2 nodes (their Jacobian from the cell's four
        # corners; see kernels.cell_stretch), interpolated bilinearly to each pixel of the region:
        # (cell index, fraction) per column and row; a cell sits at the centre of its 2s x 2s pixels.
        self.hw, self.ww = -(-self.hc // 2), -(-self.wc // 2)
        self._col0, self._colf = _node_table(self.wc * s, 2 * s, self.ww)
        self._row0, self._rowf = _node_table(self.hc * s, 2 * s, self.hw)
        self._plan_bands(moving, BAND_ROWS)

        self.low, self.high = split_bands(self.image)
        self.rho, self.rho_step = detail_autocorrelation(
            self.high, (top, bottom, left, right)
        )

        state_bytes = self.n_nodes * (2 * 4 + 1)
        if checkpoint_mb is None:
            budget_bytes = max(MIN_CHECKPOINT_MB * 2**20, CHECKPOINT_STATES * state_bytes)
            budget_bytes = min(budget_bytes, _available_memory() / 8)
        else:
            budget_bytes = float(checkpoint_mb) * 2**20
        self.checkpoint_budget = max(8, int(budget_bytes // state_bytes))
        self.euler_steps = 0  # steps taken per node (both branches, recomputation included)
        self.threads = min(2, os.cpu_count() or 1) if threads is None else max(1, int(threads))
        self._pool: ThreadPoolExecutor | None = None
        self._halves = self._plan_halves()

    # ------------------------------------------------------------------------------------ steps
    def _both(self, first: tuple[Callable, tuple], second: tuple[Callable, tuple]) -> tuple:
        """Run two independent (function, args) jobs, on two threads when there is a pool.

        The kernels and OpenCV release the GIL, so the two really run at the same time.
        """
        if self._pool is None:
            return first[0](*first[1]), second[0](*second[1])
        future = self._pool.submit(first[0], *first[1])
        b = second[0](*second[1])
        return future.result(), b

    def _start(self) -> State:
        return self.nodes.reshape(-1, 2).copy(), np.ones(self.n_nodes, bool)

    def _plan_bands(self, moving: np.ndarray, rows: int) -> None:
        """Bands (y0, y1, x0, x1) of region pixels that hold moving pixels, and what they need.

        A band's pixels read the blend weights of the cells under them and one beyond (bilinear
        interpolation); those cells are smoothed with their neighbours (one more cell around),
        whose Jacobians need the traces of their 2 x 2 nodes; the band's own maps need the nodes
        under it (plus one around when the nodes are interpolated to pixels). Per cell row the
        columns [weights_lo, weights_hi) get weights and [cells_lo, cells_hi) a stretch; per
        node row [trace_lo, trace_hi) get traces.
        """
        s, hc, wc, hw, ww = self.spacing, self.hc, self.wc, self.hw, self.ww
        h, w = moving.shape
        self.bands: list[tuple[int, int, int, int]] = []
        weights_lo, weights_hi = np.full(hw, ww, np.int64), np.zeros(hw, np.int64)
        trace_lo, trace_hi = np.full(hc, wc, np.int64), np.zeros(hc, np.int64)
        for y0 in range(0, hc * s, rows):
            y1 = min(y0 + rows, hc * s)
            gy0, gy1 = self.top + y0, min(self.top + y1, h)
            if gy0 >= h:
                break
            cols = np.nonzero(moving[gy0:gy1, self.left : min(self.left + wc * s, w)].any(axis=0))[0]
            if not len(cols):
                continue
            x0, x1 = (int(cols[0]) // s) * s, min(-(-(int(cols[-1]) + 1) // s) * s, wc * s)
            self.bands.append((y0, y1, x0, x1))
            c0, c1 = int(self._row0[y0]), min(int(self._row0[y1 - 1]) + 2, hw)
            weights_lo[c0:c1] = np.minimum(weights_lo[c0:c1], int(self._col0[x0]))
            weights_hi[c0:c1] = np.maximum(weights_hi[c0:c1], min(int(self._col0[x1 - 1]) + 2, ww))
            if s == 1:
                i0, i1, j0, j1 = y0, y1, x0, x1
            else:
                i0, j0 = max(y0 // s - 1, 0), max(x0 // s - 1, 0)
                i1, j1 = min(-(-y1 // s) + 1, hc), min(-(-x1 // s) + 1, wc)
            trace_lo[i0:i1] = np.minimum(trace_lo[i0:i1], j0)
            trace_hi[i0:i1] = np.maximum(trace_hi[i0:i1], j1)
        self._weights_lo, self._weights_hi = weights_lo, weights_hi
        cells_lo, cells_hi = weights_lo.copy(), weights_hi.copy()
        for d in range(-SMOOTH_REACH, SMOOTH_REACH + 1):  # the cells around that the smoothing reads
            shifted_lo, shifted_hi = np.full(hw, ww, np.int64), np.zeros(hw, np.int64)
            src = slice(max(-d, 0), hw - max(d, 0))
            dst = slice(max(d, 0), hw - max(-d, 0))
            shifted_lo[dst], shifted_hi[dst] = weights_lo[src], weights_hi[src]
            cells_lo, cells_hi = np.minimum(cells_lo, shifted_lo), np.maximum(cells_hi, shifted_hi)
        active = cells_hi > cells_lo
        self._cells_lo = np.where(active, np.maximum(cells_lo - SMOOTH_REACH, 0), 0)
        self._cells_hi = np.where(active, np.minimum(cells_hi + SMOOTH_REACH, ww), 0)
        for ci in np.nonzero(active)[0]:  # the 2 x 2 nodes of every such cell
            r0, r1 = _cell_pair(int(ci), hc)
            n0 = _cell_pair(int(self._cells_lo[ci]), wc)[0]
            n1 = _cell_pair(int(self._cells_hi[ci]) - 1, wc)[1] + 1
            for r in (r0, r1):
                trace_lo[r], trace_hi[r] = min(trace_lo[r], n0), max(trace_hi[r], n1)
        traced = trace_hi > trace_lo
        self._trace_lo = np.where(traced, trace_lo, 0)
        self._trace_hi = np.where(traced, trace_hi, 0)
        self.n_traced = int((self._trace_hi - self._trace_lo).sum())
        self._trace_mid = _balanced_split(self._trace_hi - self._trace_lo)

    def _plan_halves(self) -> list[_Half]:
        """The bands in two runs of rows of about equal pixel counts, one per thread; each run
        computes the cells its pixels read (and the rows around that the smoothing reads) in its
        own buffers, so a frame's weights and pixels take one hand-over between the threads.
        Where two runs meet, both compute the same cells from the same traces: the same values.
        """
        sizes = np.array([(y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in self.bands], np.int64)
        cut = _balanced_split(sizes) if len(sizes) > 1 else len(sizes)
        halves = []
        for bands in (self.bands[:cut], self.bands[cut:]):
            if not bands:
                continue
            w0 = int(self._row0[bands[0][0]])
            w1 = min(int(self._row0[bands[-1][1] - 1]) + 2, self.hw)
            c0, c1 = max(w0 - SMOOTH_REACH, 0), min(w1 + SMOOTH_REACH, self.hw)
            halves.append(_Half(bands, (w0, w1), (c0, c1), self.hw, self.ww))
        return halves

    def _advance(
        self,
        state: State,
        sign: float,
        steps: int,
        *,
        in_place: bool = False,
        step_index: int = 0,
        split: bool = True,
        count: bool = True,
    ) -> State:
        """``steps`` steps of the trace; a field sequence takes one step, with field ``step_index``.
        ``split``: over both threads, else on the calling thread; ``count``: add to
        ``euler_steps`` (not from the second thread: its caller counts)."""
        pos, alive = state if in_place else (state[0].copy(), state[1].copy())
        if steps <= 0 or not len(pos):
            return pos, alive
        split = split and self._pool is not None and len(pos) >= _MIN_SPLIT
        grid, life = pos.reshape(self.hc, self.wc, 2), alive.reshape(self.hc, self.wc)
        if self.field.ndim == 4:  # gather maps composed with this step's field (forward only)
            # every node: the composition reads the previous map wherever content came from
            field = self.field[min(step_index, len(self.field) - 1)]
            new_pos, new_alive = np.empty_like(grid), np.empty_like(life)
            mid = self.hc // 2 if split else self.hc
            common = (grid, life, self.nodes, field, new_pos, new_alive)
            self._split((compose_step, (*common, 0, mid)), (compose_step, (*common, mid, self.hc)), split)
            pos[:] = new_pos.reshape(-1, 2)
            alive[:] = new_alive.reshape(-1)
        else:
            mid = self._trace_mid if split else self.hc
            common = (grid, life, self.field, self._moving, sign, steps, self._trace_lo, self._trace_hi)
            self._split((euler_rows, (*common, 0, mid)), (euler_rows, (*common, mid, self.hc)), split)
        if count:
            self.euler_steps += steps
        return pos, alive

    def _split(self, first: tuple[Callable, tuple], second: tuple[Callable, tuple], split: bool) -> None:
        """Both halves of a job: on two threads when ``split``, else both here (also when called
        from the second thread, which must not wait on itself)."""
        if split:
            self._both(first, second)
        else:
            first[0](*first[1])
            second[0](*second[1])

    def _pair(self, first: tuple[Callable, tuple], second: tuple[Callable, tuple]) -> tuple:
        """Two independent traces' steps at once, one per thread (one hand-over, not two); the
        first job runs on the second thread."""
        if self._pool is None:
            return first[0](*first[1]), second[0](*second[1])
        return self._both(first, second)

    def _back_step(self, state: State, step_index: int = 0) -> None:
        """One backward step in place, on the calling thread, uncounted (see :meth:`_pair`)."""
        self._advance(state, -1.0, 1, in_place=True, step_index=step_index, split=False, count=False)

    def _ahead(self, state: State, steps: int) -> State:
        """The loop's forward branch: one step on this thread, more split over both."""
        return self._advance(state, 1.0, steps, split=steps > 1)

    def _sample(
        self,
        state: State,
        band: tuple[int, int, int, int],
        weights: np.ndarray | None = None,
        scatter: int = -1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The photo's low band (bilinear) and high band (nearest pixel) read along one branch's
        map, for the region pixels of ``band``; the high band's reads scattered by channel
        ``scatter`` (3 or 4; -1: none) of the cells' ``weights`` where that branch magnifies."""
        y0, y1, x0, x1 = band
        s = self.spacing
        grid = state[0].reshape(self.hc, self.wc, 2)
        if s == 1:
            maps = grid[y0:y1, x0:x1]
        else:  # the nodes under the band and one around, interpolated to pixels, then cropped
            i0, j0 = max(y0 // s - 1, 0), max(x0 // s - 1, 0)
            i1, j1 = min(-(-y1 // s) + 1, self.hc), min(-(-x1 // s) + 1, self.wc)
            sub = np.ascontiguousarray(grid[i0:i1, j0:j1])
            up = cv2.resize(sub, ((j1 - j0) * s, (i1 - i0) * s), interpolation=cv2.INTER_LINEAR)
            maps = up[y0 - i0 * s : y1 - i0 * s, x0 - j0 * s : x1 - j0 * s]
        maps = np.ascontiguousarray(maps)
        low = cv2.remap(self.low, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if weights is not None and scatter >= 0:
            if np.may_share_memory(maps, grid):  # the branch's own traces: scatter a copy
                maps = maps.copy()
            scatter_map(
                maps, weights, scatter, scatter - 3, self._col0[x0:x1], self._colf[x0:x1],
                self._row0[y0:y1], self._rowf[y0:y1], self.top + y0, self.left + x0,
            )  # fmt: skip
        high = cv2.remap(self.high, maps, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        return low, high

    def _render_half(
        self,
        half: _Half,
        out: np.ndarray,
        a: State,
        weight_a: float,
        b: State | None,
        weight_b: float,
        two: bool,
    ) -> None:
        """One run of bands: its cells' weights (two branches), then its pixels."""
        if two:
            (c0, c1), (w0, w1) = half.cells, half.rows
            raw_a, raw_b, smooth_a, smooth_b = half.stretch
            cell_stretch(
                a[0].reshape(self.hc, self.wc, 2), a[1].reshape(self.hc, self.wc),
                b[0].reshape(self.hc, self.wc, 2), b[1].reshape(self.hc, self.wc),
                float(self.spacing), raw_a, raw_b, half.dist, self._cells_lo, self._cells_hi, c0, c1,
            )  # fmt: skip
            # the least over 3 x 3 cells, averaged over 3 x 3: a branch's weight follows its
            # region, not single traces (a stretched branch folds and unfolds from cell to cell)
            _smooth_stretch(raw_a[c0:c1], smooth_a[c0:c1])
            _smooth_stretch(raw_b[c0:c1], smooth_b[c0:c1])
            blend_weights(
                smooth_a, smooth_b, half.dist, weight_a, weight_b, self.rho, self.rho_step, STRETCH_FLOOR,
                *TEXTURE_SCATTER, SCATTER_FADE, half.weights, self._weights_lo, self._weights_hi, w0, w1,
            )  # fmt: skip
        for band in half.bands:
            y0, y1, x0, x1 = band
            low_a, high_a = self._sample(a, band, half.weights, 3 if two else -1)
            low_b, high_b = self._sample(b, band, half.weights, 4) if two else (low_a, high_a)
            blend_rows(
                low_a, high_a, low_b, high_b, two, half.weights, self._col0[x0:x1], self._colf[x0:x1],
                self._row0[y0:y1], self._rowf[y0:y1], self.image, self.keep, self.top + y0, self.left + x0,
                out, 0, y1 - y0,
            )  # fmt: skip

    def _render(self, a: State, weight_a: float, b: State | None, weight_b: float) -> np.ndarray:
        """One frame from one or two branches (time weights summing to 1)."""
        out = self.image.copy()  # all that does not move
        two = b is not None and weight_b > 0 and weight_a > 0
        if not two and b is not None and weight_b > 0:
            a = b
        jobs = [(self._render_half, (half, out, a, weight_a, b, weight_b, two)) for half in self._halves]
        if len(jobs) == 2:
            self._both(*jobs)
        elif jobs:
            jobs[0][0](*jobs[0][1])
        return out

    # ----------------------------------------------------------------------------------- frames
    def frames(self, *, progress: bool = False) -> Iterator[np.ndarray]:
        """Yield the frames in order as fresh uint8 (H, W, 3) arrays; memory does not grow with N."""
        n = self.n_frames
        last = n if self.include_end else n - 1
        with contextlib.ExitStack() as stack:
            self._pool = None
            if self.threads > 1 and self.n_traced >= _MIN_SPLIT:
                self._pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="warp"))
            steps = progress_iter(
                range(last + 1), total=last + 1, desc="warp", enabled=progress, unit="frame"
            )
            frames = self._loop_frames(n) if self.loop else self._forward_frames()
            for t in steps:
                yield self.image.copy() if t == 0 or self.n_moving == 0 else next(frames)
            self._pool = None

    def _loop_frames(self, n: int) -> Iterator[np.ndarray]:
        """Frames 1, 2, ..., N (frame N is the photo again): the loop of one period, repeated."""
        period = self.period
        for _ in range(0, n, period):
            back = self._start()  # reads along -M: the content that has moved forward u steps
            # reads along +M, P - u steps: the content that will arrive in P - u steps (P-1, ..., 1)
            ahead = _descending_states(self._start(), 0, period, self.checkpoint_budget, self._ahead)
            for u in range(1, period):
                # the backward step on one thread, the forward branch's next state on the other
                # (a long recomputation there splits its rows over both once the step is done)
                _, later = self._pair((self._back_step, (back,)), (next, (ahead,)))
                self.euler_steps += 1
                yield self._render(back, 1.0 - u / period, later, u / period)
            yield self.image.copy()

    def _forward_frames(self) -> Iterator[np.ndarray]:
        """Frames 1, 2, ...: two phases restarted from the photo every cycle, half a cycle apart."""
        period, half = self.cycle, self.cycle // 2
        first, second = self._start(), self._start()
        t = 0
        while True:
            t += 1
            jobs = []
            if t % period == 0:
                first = self._start()
            else:
                jobs.append(first)
            weight = 0.0
            if t >= half:
                age = (t - half) % period
                if age == 0:
                    second = self._start()
                else:
                    jobs.append(second)
                # smoothstep of the triangle: a restarted phase's share grows from zero with zero slope,
                # which the detail weighting (up to 50x for a fresh phase over a smeared one) would
                # otherwise turn into a jump at its first step
                tri = 1.0 - abs(2.0 * age / period - 1.0)
                weight = tri * tri * (3.0 - 2.0 * tri)
            if len(jobs) == 2:  # both phases' steps at once, one per thread
                self._pair((self._back_step, (jobs[0], t - 1)), (self._back_step, (jobs[1], t - 1)))
            elif jobs:
                self._back_step(jobs[0], t - 1)
            self.euler_steps += len(jobs)
            yield self._render(first, 1.0 - weight, second, weight)

    @property
    def stats(self) -> dict:
        return {
            "loop_period": int(self.period) if self.loop else None,
            "moving_pixels": int(self.n_moving),
            "euler_steps_per_pixel": int(self.euler_steps),
            "checkpoint_budget_states": int(self.checkpoint_budget),
            "node_spacing": int(self.spacing),
            "cycle": int(self.cycle) if not self.loop else None,
        }


def loop_period(frames: int, cycle: int) -> int:
    """The period of an N-frame loop: N, unless N is over twice the cycle and has a divisor between
    the cycle and twice it (then the largest such): traces of a long loop would otherwise smear the
    photo over the whole moving region; the loop then repeats its period N / P times."""
    if frames <= 2 * cycle:
        return frames
    fits = [p for p in range(cycle, 2 * cycle + 1) if frames % p == 0]
    return max(fits) if fits else frames


def split_bands(image: np.ndarray, sigma: float = LOW_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (H, W, 3) -> (low, high) uint8 with image == low + high - 128 exactly.

    low is the Gaussian blur, nudged where needed so that the rest fits in a byte (an edge steeper
    than 127 grey levels keeps part of its step in the low band).
    """
    f = image.astype(np.int16)
    blur = np.rint(cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma)).astype(np.int16)
    low = np.clip(blur, f - 127, f + 128)
    low = np.clip(low, 0, 255)
    high = f - low + 128
    return low.astype(np.uint8), high.astype(np.uint8)


def detail_autocorrelation(
    high: np.ndarray, box: tuple[int, int, int, int], size: int = 256, lags: float = 16.0, step: float = 0.5
) -> tuple[np.ndarray, float]:
    """The high band's autocorrelation against distance (``step`` px apart, up to ``lags`` px), in
    the middle of the moving region's ``box`` (top, bottom, left, right); negative values are 0."""
    top, bottom, left, right = box
    cy, cx = (top + bottom) // 2, (left + right) // 2
    y0 = max(0, min(cy - size // 2, high.shape[0] - size))
    x0 = max(0, min(cx - size // 2, high.shape[1] - size))
    crop = high[y0 : y0 + size, x0 : x0 + size].astype(np.float32).mean(axis=2)
    crop -= crop.mean()
    spectrum = np.fft.rfft2(crop, s=(2 * crop.shape[0], 2 * crop.shape[1]))  # zero-padded: no wrap-around
    corr = np.fft.irfft2(spectrum * np.conj(spectrum), s=(2 * crop.shape[0], 2 * crop.shape[1]))
    count = len(np.arange(0, lags + step, step))
    if corr[0, 0] <= 0:
        return np.zeros(count, np.float32), step
    corr /= corr[0, 0]
    hh, ww = corr.shape
    yy = np.minimum(np.arange(hh), hh - np.arange(hh))[:, None]
    xx = np.minimum(np.arange(ww), ww - np.arange(ww))[None, :]
    radius = np.hypot(yy, xx)
    near = radius <= lags + step
    bins = np.rint(radius[near] / step).astype(int)
    sums = np.bincount(bins, corr[near], minlength=count)[:count]
    counts = np.bincount(bins, minlength=count)[:count]
    rho = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    rho[0] = 1.0
    return np.clip(rho, 0.0, 1.0).astype(np.float32), step


class _Half:
    """One thread's run of bands and its own buffers for the cells it reads."""

    def __init__(
        self, bands: list[tuple[int, int, int, int]], rows: tuple[int, int], cells: tuple[int, int], hw: int,
        ww: int,
    ) -> None:  # fmt: skip
        self.bands = bands
        self.rows = rows  # cell rows whose weights its pixels read
        self.cells = cells  # cell rows whose stretch those weights read (smoothing)
        # how little each branch magnifies (raw, smoothed); cells never computed keep 1: they only
        # border the smoothing of the cells that are read
        self.stretch = np.ones((4, hw, ww), np.float32)
        self.dist = np.zeros((hw, ww), np.float32)  # between the branches' source points
        self.weights = np.zeros((hw, ww, 5), np.float32)


def _smooth_stretch(raw: np.ndarray, out: np.ndarray) -> None:
    """``out`` = the 3 x 3 minimum of ``raw``, averaged over 3 x 3 (OpenCV's default border)."""
    cv2.blur(cv2.erode(raw, SMOOTH_KERNEL), SMOOTH_SIZE, out)


def _cell_pair(k: int, count: int) -> tuple[int, int]:
    """The two node indices of cell ``k`` along an axis of ``count`` nodes (as kernels._cell_nodes)."""
    k0, k1 = 2 * k, 2 * k + 1
    if k1 >= count:
        k1 = count - 1
        k0 = max(k1 - 1, 0)
    return k0, k1


def _balanced_split(counts: np.ndarray) -> int:
    """The row that splits rows of ``counts`` items into two halves of about equal work."""
    total = np.cumsum(counts)
    return int(np.searchsorted(total, total[-1] / 2)) + 1 if len(total) and total[-1] else len(counts)


def _node_table(pixels: int, spacing: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``pixels`` pixels: the node below it and the fraction towards the next one."""
    u = np.clip((np.arange(pixels, dtype=np.float32) + 0.5) / spacing - 0.5, 0, count - 1)
    i0 = np.floor(u).astype(np.int64)
    return i0, (u - i0).astype(np.float32)


def _available_memory() -> float:
    """Bytes of memory available to new allocations (Linux MemAvailable; else a conservative 2 GB)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 2.0 * 2**30


def _descending_states(
    state: State, lo: int, hi: int, budget: int, advance: Callable[[State, int], State]
) -> Iterator[State]:
    """Yield the states at steps hi-1, hi-2, ..., lo, given the state at step ``lo``.

    At most ``budget`` states (``state`` included) are held at once. When the range does not fit,
    one forward pass keeps c ~ budget/2 checkpoints and each segment, last first, is recomputed from
    its checkpoint with the budget the remaining checkpoints leave (recursively). c * (budget - c)
    steps fit in two passes (e.g. 196 steps with 28 states), more cost one pass per level; with two
    states or fewer the states are recomputed from ``state`` one by one.
    """
    n = hi - lo
    if n <= budget:
        states = [state]
        for _ in range(n - 1):
            states.append(advance(states[-1], 1))
        while states:
            yield states.pop()
        return
    if budget <= 2:
        for k in range(n - 1, -1, -1):
            yield advance(state, k)
        return
    count = (budget + 1) // 2
    seg = math.ceil(n / count)
    checkpoints = [(lo, state)]
    for k in range(lo + seg, hi, seg):
        checkpoints.append((k, advance(checkpoints[-1][1], seg)))
    while checkpoints:
        k, start = checkpoints.pop()
        yield from _descending_states(start, k, min(k + seg, hi), budget - len(checkpoints), advance)


def warp_frames(
    image: np.ndarray,
    field: np.ndarray,
    *,
    frames: int,
    loop: bool = True,
    strength: float = 1.0,
    mask: np.ndarray | None = None,
    include_end: bool = False,
    progress: bool = False,
    cycle: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield the animation's frames (uint8 (H, W, 3)) one by one; see :class:`EulerianWarp`."""
    return EulerianWarp(
        image, field, frames=frames, loop=loop, strength=strength, mask=mask, include_end=include_end,
        cycle=cycle,
    ).frames(progress=progress)
