"""Metrics that need no weights: motion fidelity, warp error, still-region drift, join smoothness.

Motion is measured with optical flow: the project's ``stillmotion.motion.flow.estimate_flow`` when
it is installed, else OpenCV's DIS (medium preset), both (H, W, 2) (dx, dy) pixels from frame t to
frame t+1.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# Forward-backward consistency (Sundaram et al. 2010, as used for occlusion masks by Ruder et al.):
# a pixel is trusted when |F_fw + F_bw(x + F_fw)|^2 < A (|F_fw|^2 + |F_bw(x + F_fw)|^2) + B.
FB_ALPHA = 0.01
FB_BETA = 0.5


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame


_DIS = None


def _dis_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    global _DIS
    if _DIS is None:
        _DIS = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return _DIS.calc(_gray(a), _gray(b), None).astype(np.float32)


def flow_method() -> str:
    """Which flow estimator the metrics use: the project's own when present, else OpenCV DIS."""
    try:
        # lazy, guarded: a part missing from this installation is reported, not an import error
        from stillmotion.motion.flow import estimate_flow  # noqa: F401
    except ImportError:
        return "opencv-dis-medium"
    return "stillmotion.motion.flow.estimate_flow"


def optical_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flow (H, W, 2) from uint8 RGB frame ``a`` to frame ``b``."""
    try:
        # lazy, guarded: a part missing from this installation is reported, not an import error
        from stillmotion.motion.flow import estimate_flow
    except ImportError:
        return _dis_flow(a, b)
    return np.asarray(estimate_flow(a, b), np.float32)


def video_flows(frames: np.ndarray, *, backward: bool = False) -> np.ndarray:
    """Forward flows t -> t+1 (N-1, H, W, 2) of a video; with ``backward`` the flows t+1 -> t."""
    n, h, w = frames.shape[:3]
    out = np.zeros((max(n - 1, 0), h, w, 2), np.float32)
    for t in range(n - 1):
        out[t] = (
            optical_flow(frames[t + 1], frames[t]) if backward else optical_flow(frames[t], frames[t + 1])
        )
    return out


def backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` at x + flow(x) (bilinear; outside the frame -> border value)."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(
        image, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def consistency_mask(flow_fw: np.ndarray, flow_bw: np.ndarray) -> np.ndarray:
    """True where forward and backward flow agree and x + F_fw(x) lands inside the frame."""
    h, w = flow_fw.shape[:2]
    bw_at = backward_warp(flow_bw, flow_fw)
    diff = ((flow_fw + bw_at) ** 2).sum(-1)
    bound = FB_ALPHA * ((flow_fw**2).sum(-1) + (bw_at**2).sum(-1)) + FB_BETA
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    tx, ty = gx + flow_fw[..., 0], gy + flow_fw[..., 1]
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return (diff < bound) & inside


def warp_error_per_frame(
    frames: np.ndarray, flows_fw: np.ndarray | None = None, flows_bw: np.ndarray | None = None
) -> np.ndarray:
    """Warp error of each adjacent pair (N-1,) as Lai et al. (2018) define it.

    Frame t+1 is backward-warped to t with the forward flow t -> t+1; E = mean over the
    consistent (non-occluded) pixels of the squared RGB difference, colours in [0, 1].
    """
    n = len(frames)
    flows_fw = video_flows(frames) if flows_fw is None else flows_fw
    flows_bw = video_flows(frames, backward=True) if flows_bw is None else flows_bw
    out = np.zeros(max(n - 1, 0))
    for t in range(n - 1):
        warped = backward_warp(frames[t + 1], flows_fw[t]).astype(np.float32) / 255.0
        sq = ((frames[t].astype(np.float32) / 255.0 - warped) ** 2).sum(-1)
        m = consistency_mask(flows_fw[t], flows_bw[t])
        out[t] = float(sq[m].mean()) if m.any() else math.nan
    return out


@dataclass
class MotionFidelity:
    """Requested vs generated motion over the region that was asked to move."""

    epe: float  # mean end-point error, px/frame
    cosine: float  # mean cosine between requested and generated vectors
    epe_per_frame: np.ndarray
    cosine_per_frame: np.ndarray
    region_fraction: float  # share of pixels in the evaluated region


def motion_region(
    requested: np.ndarray, rel_threshold: float = 0.05, mask: np.ndarray | None = None
) -> np.ndarray:
    """Pixels asked to move: requested magnitude above ``rel_threshold`` x its maximum, inside ``mask``."""
    mag = np.sqrt((np.asarray(requested, np.float32) ** 2).sum(-1))
    if mag.ndim == 3:  # a flow sequence: its mean speed per pixel
        mag = mag.mean(0)
    region = mag > rel_threshold * float(mag.max()) if mag.max() > 0 else np.zeros(mag.shape, bool)
    if mask is not None:
        region &= mask
    return region


def motion_fidelity(
    requested: np.ndarray, generated: np.ndarray, *, region: np.ndarray | None = None, eps: float = 1e-6
) -> MotionFidelity:
    """End-point error and cosine between the requested motion and the measured (generated) motion.

    ``requested`` is one static field (H, W, 2) or a flow sequence (N, H, W, 2); ``generated`` is the
    measured flow sequence (M, H, W, 2). Sequences are compared frame by frame over their common
    length; a static field is compared with every generated flow. Where either vector is zero the
    cosine counts as 0 (no motion where motion was asked for is not agreement).
    """
    if generated.ndim != 4 or generated.shape[-1] != 2:
        raise ValueError(f"generated flows must be (M, H, W, 2), got {generated.shape}")
    req = requested[None] if requested.ndim == 3 else requested
    if req.shape[1:] != generated.shape[1:]:
        raise ValueError(
            f"requested motion {req.shape[1:]} and generated flow {generated.shape[1:]} differ in size"
        )
    if region is None:
        region = motion_region(requested)
    n = len(generated) if len(req) == 1 else min(len(req), len(generated))
    epe = np.full(n, math.nan)
    cos = np.full(n, math.nan)
    if region.any():
        for t in range(n):
            r = req[0 if len(req) == 1 else t][region]
            g = generated[t][region]
            epe[t] = float(np.linalg.norm(r - g, axis=-1).mean())
            norms = np.linalg.norm(r, axis=-1) * np.linalg.norm(g, axis=-1)
            dots = (r * g).sum(-1)
            cos[t] = float(np.where(norms > eps, dots / np.maximum(norms, eps), 0.0).mean())
    return MotionFidelity(
        epe=float(np.nanmean(epe)) if n and region.any() else math.nan,
        cosine=float(np.nanmean(cos)) if n and region.any() else math.nan,
        epe_per_frame=epe,
        cosine_per_frame=cos,
        region_fraction=float(region.mean()),
    )


def still_region_drift(frames: np.ndarray, image: np.ndarray, still: np.ndarray) -> np.ndarray:
    """Mean absolute change (0-255 grey levels) of the ``still`` pixels against the input, per frame (N,)."""
    if still.shape != frames.shape[1:3]:
        raise ValueError(f"still-region mask {still.shape} does not match the frames {frames.shape[1:3]}")
    if not still.any():
        return np.full(len(frames), math.nan)
    ref = image.astype(np.float32)[still]
    return np.array([float(np.abs(f.astype(np.float32)[still] - ref).mean()) for f in frames])


def join_smoothness(frames: np.ndarray, joins: Sequence[int]) -> float:
    """Mean frame difference at segment joins divided by the median difference within segments.

    ``joins`` are the indices j of the first frame of each later segment: the pair (j-1, j) is a join.
    1.0 means a join looks like any other step; large values are visible seams. NaN without joins.
    """
    diffs = np.abs(np.diff(frames.astype(np.float32), axis=0)).reshape(len(frames) - 1, -1).mean(1)
    return seam_ratio(diffs, [range(j, j + 1) for j in joins])


def _seam_steps(n: int, seams: Sequence[range]) -> list[tuple[int, ...]]:
    """The seams as the indices t of their steps t -> t+1 within ``n`` steps (seam frame j is step j-1),
    duplicates and empty ones dropped, in order (so the mean over them sums in one order)."""
    kept = {tuple(j - 1 for j in seam if 1 <= j <= n) for seam in seams}
    return sorted(seam for seam in kept if seam)


def seam_ratio(
    diffs: Sequence[float], seams: Sequence[range], pick: Callable[..., float] = max
) -> float:
    """``diffs[t]``: a per-step figure of step t -> t+1 (mean frame difference, or speed). For each seam
    (the frames j whose step j-1 -> j belongs to it: one for a cut, several for a cross-fade) its
    largest step (``pick=min``: its smallest), averaged over the seams, divided by the median of all
    other steps. NaN without seams."""
    diffs = np.asarray(diffs, dtype=np.float64)
    kept = _seam_steps(len(diffs), seams)
    if not kept:
        return math.nan
    inner = np.delete(diffs, sorted({t for seam in kept for t in seam}))
    if len(inner) == 0:
        return math.nan
    return _picked_ratio(diffs, kept, float(np.median(inner)), pick)


def seam_ratio_by_stretch(
    diffs: Sequence[float], seams: Sequence[range], pick: Callable[..., float] = max
) -> float:
    """:func:`seam_ratio` against stretches of the seams' own width: a seam of w steps is judged by its
    largest (``pick=min``: smallest) step, and so is every other stretch of w consecutive steps that
    touches no seam; the seams' mean pick over the median of those. With one-step seams it is
    :func:`seam_ratio`. The largest (smallest) of several steps is above (below) the median of single
    steps even where nothing happens, so on a video whose steps vary this is the figure for which 1 means
    a join looks like any other stretch as wide. NaN without seams or without a stretch to compare."""
    diffs = np.asarray(diffs, dtype=np.float64)
    kept = _seam_steps(len(diffs), seams)
    if not kept:
        return math.nan
    width = max(len(seam) for seam in kept)
    taken = {t for seam in kept for t in seam}
    starts = [i for i in range(len(diffs) - width + 1) if taken.isdisjoint(range(i, i + width))]
    if not starts:
        return math.nan
    return _picked_ratio(diffs, kept, float(np.median([pick(diffs[i : i + width]) for i in starts])), pick)


def _picked_ratio(diffs: np.ndarray, kept: list[tuple[int, ...]], med: float, pick: Callable) -> float:
    """The seams' mean pick over ``med`` (inf when that is 0)."""
    worst = float(np.mean([pick(diffs[t] for t in seam) for seam in kept]))
    return worst / med if med > 0 else math.inf


# Fine-flow meter settings, validated on frames of known motion (bench_embedded's meter-check rows and
# tests/test_eval_metrics.py): DIS's 8-px patches, on frames upsampled 2x, match 4 px of the clip.
FINE_FLOW_UPSAMPLE = 2
FINE_FLOW_PREFILTER = 1.5  # px of the original frame


def fine_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flow (H, W, 2) from uint8 RGB frame ``a`` to frame ``b``, read for metering the speed of blurred
    or blocky content (a small model's decoded frames).

    The project's DIS (stillmotion.motion.flow.DISSettings) on the frames upsampled 2x (bicubic) and
    Gaussian-blurred (sigma 1.5 px of the original), with its variational smoothness pass off, then
    brought back to the frames' size and scale. Why each: at the original size an 8-px patch near a
    mask's edge straddles still pixels and the smoothness pass spreads their zero into a thin moving
    region, both reading its speed low; the pre-blur smooths an autoencoder's fixed 8-px block grid
    (which stays put while the content moves, pulling the reading towards zero) while a translation
    of the blurred frames is the same translation.
    """
    s = FINE_FLOW_UPSAMPLE

    def prepare(frame: np.ndarray) -> np.ndarray:
        g = cv2.resize(_gray(frame), None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC).astype(np.float32)
        g = cv2.GaussianBlur(g, (0, 0), FINE_FLOW_PREFILTER * s)
        return np.clip(g + 0.5, 0, 255).astype(np.uint8)

    flow = _fine_dis().calc(prepare(a), prepare(b), None)
    h, w = a.shape[:2]
    return (cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA) / np.float32(s)).astype(np.float32)


@functools.cache
def _fine_dis() -> Any:
    """The DIS instance fine_flow reads with, made once per process."""
    from stillmotion.motion.flow import DISSettings  # lazy: the metrics stay importable without it

    return DISSettings(variational_refinement_iterations=0).create()


# Frames apart of the pairs clip_flow reads (validated with fine_flow on known shifts with and without
# flicker: bench_embedded's meter-check rows, tests/test_eval_metrics.py).
CLIP_FLOW_BASELINE = 4


def clip_flow(frames: np.ndarray, baseline: int = CLIP_FLOW_BASELINE) -> np.ndarray:
    """Mean motion per frame (H, W, 2) of a clip (N, H, W, 3), read by :func:`fine_flow` on the pairs
    (t, t + k), k = ``baseline`` (at most N - 1), divided by k and averaged over t.

    Steady motion reads the same as from consecutive pairs. A small model's frames also change in place
    a little every frame (flicker: blocks brighten and dim); a flow method reads that as motion of about
    the same size in any pair, so on consecutive pairs it adds random motion comparable to a slow
    speed, while over k frames the true displacement is k times larger and the flicker's share k times
    smaller."""
    n = len(frames)
    if n < 2:
        raise ValueError(f"clip_flow needs at least 2 frames, got {n}")
    k = max(1, min(int(baseline), n - 1))
    return np.mean([fine_flow(frames[t], frames[t + k]) / np.float32(k) for t in range(n - k)], axis=0)
