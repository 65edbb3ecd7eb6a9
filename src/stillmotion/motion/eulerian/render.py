"""Eulerian animation of a still image (Holynski et al. 2021, "Animating Pictures with Eulerian
Motion Fields"; the "Animating-pictures" baseline of the paper's Table 1), with no learned parts.

The method, as implemented here:

- **Euler integration.** A static motion field M (H, W, 2) in pixels per frame moves every source
  pixel p along x_0 = p, x_{k+1} = x_k + M(x_k), M sampled bilinearly at the current position.
  Positions are advanced one step per frame and never stored for all frames. A pixel that leaves
  the frame stays invalid (it is no longer splatted).
- **Softmax splatting.** Frame t forward-splats each source pixel bilinearly to its position x_t
  with weight exp(Z): output = sum(w * I) / sum(w). Z is our choice (Holynski et al. learn it):
  ``Z = beta * |M(p)| / max |M|`` with beta = 4 (:data:`SOFTMAX_BETA`), so where a moving pixel
  lands on a still or slower one, the faster (the fluid, usually in front) weighs up to e^4 = 55
  times more and wins, instead of a ghostly average; pixels of similar speed average softly. Z is
  relative to the field's maximum so the weighting means the same at every resolution and strength.
- **Symmetric splatting (seamless loops).** Frame t of an N-frame loop splats the image pushed
  forward t steps along M with weight (1 - t/N) and the image pushed backward N - t steps along -M
  with weight t/N, into one numerator and one denominator. Frame 0 and frame N are both the input
  image, so playing frames 0..N-1 in a loop has no seam.
  The backward branch needs its positions in *decreasing* step order (N-1, N-2, ..., 1) while
  integration runs forwards; storing all N position fields would grow memory with N. Instead a
  fixed budget of checkpoints (``checkpoint_mb``, default 64 MB) is kept and segments between them
  are recomputed (recursively when a segment does not fit): memory stays constant whatever N is,
  and the cost is 2-3 extra Euler steps per frame (cheap next to splatting).
- **Holes** (nothing lands there) are filled by push-pull from the splatted pixels around them
  (:mod:`stillmotion.motion.eulerian.holes`). In a loop the other branch fills most of them first.
- **Strength** scales the speed (the field). **Mask:** the field is zero outside it, and pixels
  outside it are copied from the input, bit for bit.
- Pixels whose motion is exactly zero never move; their (constant) contribution is computed once.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from stillmotion.errors import UserInputError
from stillmotion.progress import progress_iter

SOFTMAX_BETA = 4.0
# A pixel whose summed splatting weight is below this received (next to) nothing: a hole.
HOLE_EPS = 1e-4
DEFAULT_CHECKPOINT_MB = 64.0
# Below this many moving pixels, handing work to a second thread costs more than it saves.
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
    """Animate ``image`` along the static ``field``; :meth:`frames` yields uint8 (H, W, 3) frames.

    Args:
        image: RGB uint8 (H, W, 3).
        field: float32 (H, W, 2), (dx, dy) pixels per frame at the image's resolution; or
            (F, H, W, 2), one field per frame step (e.g. a real video's optical flows: step t -> t+1
            uses field t, the last one repeats), forward animation only (``loop=False``).
        frames: number of frames N (>= 1). For a loop, N is also the period: frame N would equal
            frame 0, so frames 0..N-1 repeat seamlessly.
        loop: symmetric splatting for a seamless loop (default) or a plain forward animation.
        strength: speed factor applied to the field (0 gives a still video).
        mask: bool (H, W), True where things may move; everything outside is copied from ``image``.
        include_end: also yield frame N (equal to frame 0 for a loop); for checks and for players
            that want the closed loop.
        checkpoint_mb: memory for the backward branch's checkpoints (fixed, whatever N is).
        threads: 1 or 2 (default: 2 when the machine has 2 or more cores). With 2, the two branches
            are splatted at the same time and Euler steps and resolving are split in halves.
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
        beta: float = SOFTMAX_BETA,
        checkpoint_mb: float = DEFAULT_CHECKPOINT_MB,
        threads: int | None = None,
    ) -> None:
        check_warp_inputs(image, field, mask)
        if not (isinstance(frames, int | np.integer) and frames >= 1):
            raise UserInputError(f"frames must be an integer >= 1, got {frames!r}")
        if not (math.isfinite(strength) and strength >= 0):
            raise UserInputError(f"strength must be a finite number >= 0, got {strength}")
        if not (math.isfinite(beta) and 0 <= beta <= 30):
            raise UserInputError(f"softmax beta must be in [0, 30], got {beta}")
        if field.ndim == 4 and loop:
            raise UserInputError("a per-frame motion field sequence animates forward only (loop=False)")
        self.image = np.ascontiguousarray(image)
        self.n_frames = int(frames)
        self.loop = bool(loop)
        self.include_end = bool(include_end)
        h, w = image.shape[:2]
        motion = np.ascontiguousarray(field, dtype=np.float32) * np.float32(strength)
        self.keep = np.zeros((h, w), bool) if mask is None else ~np.asarray(mask, bool)
        motion[..., self.keep, :] = 0.0
        self.field = motion  # (H, W, 2), or (F, H, W, 2): step t -> t+1 uses field[min(t, F - 1)]

        sequence = motion if motion.ndim == 4 else motion[None]
        moving = (sequence != 0).any(axis=(0, 3))
        ys, xs = np.nonzero(moving)
        self.n_moving = len(ys)
        # a sequence's splatting priority comes from each pixel's fastest step
        magnitude = np.hypot(sequence[:, ys, xs, 0], sequence[:, ys, xs, 1]).max(axis=0)
        top = float(magnitude.max()) if self.n_moving else 1.0
        importance = np.exp(np.float32(beta) * magnitude / np.float32(top)).astype(np.float32)
        colours = image[ys, xs].astype(np.float32)
        self.src = np.ascontiguousarray(
            np.concatenate([colours * importance[:, None], importance[:, None]], 1)
        )
        self.start_pos = np.ascontiguousarray(np.stack([xs, ys], 1).astype(np.float32))
        # Still pixels splat onto themselves with exp(0) = 1 and total branch weight 1 in every frame.
        self.static = np.zeros((h, w, 4), np.float32)
        still = ~moving
        self.static[still, :3] = image[still]
        self.static[still, 3] = 1.0

        state_bytes = max(self.n_moving, 1) * (2 * 4 + 1)
        self.checkpoint_budget = max(8, int(checkpoint_mb * 2**20 // state_bytes))
        self.euler_steps = 0  # pixel-field steps taken (both branches, recomputation included)
        self.threads = min(2, os.cpu_count() or 1) if threads is None else max(1, int(threads))
        self._pool: ThreadPoolExecutor | None = None

    def _both(self, first: tuple[Callable, tuple], second: tuple[Callable, tuple]) -> tuple:
        """Run two independent (function, args) jobs, on two threads when there is a pool.

        The kernels release the GIL, so the two really run at the same time.
        """
        if self._pool is None:
            return first[0](*first[1]), second[0](*second[1])
        future = self._pool.submit(first[0], *first[1])
        b = second[0](*second[1])
        return future.result(), b

    def _advance(
        self, state: State, sign: float, steps: int, *, in_place: bool = False, step_index: int = 0
    ) -> State:
        """``steps`` Euler steps; a field sequence takes one step, with the field of step ``step_index``."""
        from stillmotion.motion.eulerian.kernels import euler_advance

        pos, alive = state if in_place else (state[0].copy(), state[1].copy())
        field = self.field
        if field.ndim == 4:
            field = field[min(step_index, len(field) - 1)]
        if steps > 0 and len(pos):
            half = len(pos) // 2 if self._pool is not None and len(pos) >= _MIN_SPLIT else len(pos)
            self._both(
                (euler_advance, (pos[:half], alive[:half], field, sign, steps)),
                (euler_advance, (pos[half:], alive[half:], field, sign, steps)),
            )
            self.euler_steps += steps
        return pos, alive

    def _start(self) -> State:
        return self.start_pos.copy(), np.ones(self.n_moving, bool)

    def frames(self, *, progress: bool = False) -> Iterator[np.ndarray]:
        """Yield the frames in order as fresh uint8 (H, W, 3) arrays; memory does not grow with N."""
        from stillmotion.motion.eulerian.holes import fill_holes
        from stillmotion.motion.eulerian.kernels import resolve, splat_add, splat_branch

        n = self.n_frames
        h, w = self.image.shape[:2]
        last = n if self.include_end else n - 1
        acc = np.zeros((2, h, w, 4), np.float32)
        zeros = np.zeros((h, w, 4), np.float32)
        hole = np.zeros((h, w), bool)
        forward = self._start()
        backward_state = forward
        backward = None
        if self.loop:
            backward = _descending_states(
                self._start(), 0, n, self.checkpoint_budget, lambda s, k: self._advance(s, -1.0, k)
            )
        mid = h // 2
        with contextlib.ExitStack() as stack:
            self._pool = None
            if self.threads > 1 and self.n_moving >= _MIN_SPLIT:
                self._pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="warp"))
            steps = progress_iter(
                range(last + 1), total=last + 1, desc="warp", enabled=progress, unit="frame"
            )
            for t in steps:
                if t > 0:
                    self._advance(forward, 1.0, 1, in_place=True, step_index=t - 1)
                weight_f, weight_b = (1.0 - t / n, t / n) if self.loop else (1.0, 0.0)
                # Frame t needs the backward branch at step n - t: n-1, ..., 0 in order.
                if self.loop and t > 0:
                    backward_state = next(backward)
                out = np.empty((h, w, 3), np.uint8)
                if self.n_moving and t > 0:
                    if self._pool is None:  # one thread: both branches into one accumulator
                        splat_branch(*forward, weight_f, self.src, acc[0], self.static)
                        splat_add(*backward_state, weight_b, self.src, acc[0])
                        used = acc[:1]
                    else:  # two threads: one accumulator each, summed by resolve
                        self._both(
                            (splat_branch, (*forward, weight_f, self.src, acc[0], self.static)),
                            (splat_branch, (*backward_state, weight_b, self.src, acc[1], zeros)),
                        )
                        used = acc
                    common = (used, self.image, self.keep, HOLE_EPS, out, hole)
                    holes = sum(self._both((resolve, (*common, 0, mid)), (resolve, (*common, mid, h))))
                    if holes:
                        fill_holes(acc[0], hole, out, HOLE_EPS)
                else:
                    out[:] = self.image  # step 0 of every branch is the image itself
                yield out
            self._pool = None

    @property
    def stats(self) -> dict:
        return {
            "moving_pixels": int(self.n_moving),
            "euler_steps_per_pixel": int(self.euler_steps),
            "checkpoint_budget_states": int(self.checkpoint_budget),
        }


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
) -> Iterator[np.ndarray]:
    """Yield the animation's frames (uint8 (H, W, 3)) one by one; see :class:`EulerianWarp`."""
    return EulerianWarp(
        image, field, frames=frames, loop=loop, strength=strength, mask=mask, include_end=include_end
    ).frames(progress=progress)
