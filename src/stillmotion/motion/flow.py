"""Optical flow between video frames: what the motion fields of real videos are made of.

Methods (all return float32 (H, W, 2) (dx, dy) from frame 1 to frame 2 at the frames' full size):

- ``dis`` (default, no weights): OpenCV's Dense Inverse Search, tuned. The "medium" preset stops
  one pyramid level above full resolution and runs 25 patch-descent iterations per level; on real
  ground truth (Middlebury RubberWhale, Sintel alley_1 clean) going down to the finest level with
  denser patches (stride 4), fewer descent iterations (12; 25 and 50 were less accurate here)
  and a smoother variational refinement (alpha 40) lowers the end-point error by a third to a
  half (RubberWhale 0.225 -> 0.116 px, Sintel alley_1 0.341 -> 0.231 px) at about 3x the preset's
  time; see ``benchmarks/bench_flow.py`` and docs/benchmarks.md. Larger patches (12) and stride 2 cost
  more and did not help; an extra variational pass (10 iterations) gained 0.01-0.02 px for over
  6x the preset's time, beyond the 5x budget.
- ``farneback``: OpenCV's polynomial-expansion flow; a classical baseline, no weights.
- ``raft``: RAFT (Teed & Deng 2020) in PyTorch, loading torchvision-format weights from a local
  file (:mod:`stillmotion.motion.raft`); the paper's choice when weights are at hand.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from stillmotion.errors import UserInputError
from stillmotion.progress import progress_iter

METHODS = ("dis", "farneback", "raft")
DEFAULT_METHOD = "dis"


@dataclass(frozen=True)
class DISSettings:
    """OpenCV DIS parameters; the defaults are the project's tuned setting (see module docstring)."""

    finest_scale: int = 0
    patch_size: int = 8
    patch_stride: int = 4
    gradient_descent_iterations: int = 12
    variational_refinement_iterations: int = 5
    variational_refinement_alpha: float = 40.0
    variational_refinement_delta: float = 5.0
    variational_refinement_gamma: float = 10.0
    use_mean_normalization: bool = True
    use_spatial_propagation: bool = True

    def create(self) -> cv2.DISOpticalFlow:
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        dis.setFinestScale(self.finest_scale)
        dis.setPatchSize(self.patch_size)
        dis.setPatchStride(self.patch_stride)
        dis.setGradientDescentIterations(self.gradient_descent_iterations)
        dis.setVariationalRefinementIterations(self.variational_refinement_iterations)
        dis.setVariationalRefinementAlpha(self.variational_refinement_alpha)
        dis.setVariationalRefinementDelta(self.variational_refinement_delta)
        dis.setVariationalRefinementGamma(self.variational_refinement_gamma)
        dis.setUseMeanNormalization(self.use_mean_normalization)
        dis.setUseSpatialPropagation(self.use_spatial_propagation)
        return dis


# Smallest frame side flow is computed on (OpenCV's DIS fails below 12 px).
MIN_FLOW_SIDE = 12


def _check_pair(frame1: np.ndarray, frame2: np.ndarray) -> None:
    for name, f in (("frame 1", frame1), ("frame 2", frame2)):
        if (
            not isinstance(f, np.ndarray)
            or f.ndim not in (2, 3)
            or (f.ndim == 3 and f.shape[2] not in (1, 3, 4))
        ):
            raise UserInputError(
                f"{name}: expected an (H, W) or (H, W, 3) image array, got {getattr(f, 'shape', f)}"
            )
    if frame1.shape[:2] != frame2.shape[:2]:
        raise UserInputError(
            f"the two frames differ in size: {frame1.shape[1]}x{frame1.shape[0]} vs "
            f"{frame2.shape[1]}x{frame2.shape[0]}"
        )
    if min(frame1.shape[:2]) < MIN_FLOW_SIDE:
        raise UserInputError(
            f"frames of {frame1.shape[1]}x{frame1.shape[0]} are too small for optical flow: at least "
            f"{MIN_FLOW_SIDE} px on each side (OpenCV's DIS needs it; check --resize / --size)"
        )


def _gray_u8(frame: np.ndarray) -> np.ndarray:
    f = frame
    if f.dtype != np.uint8:
        # Float frames are taken to be in [0, 1] (the project's convention for float images).
        f = np.clip(np.asarray(f, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if f.ndim == 3:
        if f.shape[2] == 1:
            return np.ascontiguousarray(f[..., 0])
        return cv2.cvtColor(np.ascontiguousarray(f[..., :3]), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(f)


class FlowEstimator:
    """A reusable flow method: build once (DIS object, RAFT network), call on many frame pairs.

    ``FlowEstimator("raft", weights="raft_small.pth")`` loads the network once; ``device`` and
    ``iterations`` only matter for RAFT (``device=None`` picks CUDA when present).
    """

    def __init__(
        self,
        method: str = DEFAULT_METHOD,
        *,
        weights: str | os.PathLike | None = None,
        device: str | None = None,
        iterations: int = 12,
        dis_settings: DISSettings | None = None,
    ) -> None:
        if method not in METHODS:
            raise UserInputError(f"unknown flow method {method!r}; choose one of {', '.join(METHODS)}")
        self.method = method
        self._dis = None
        self._raft = None
        if weights is not None and method != "raft":
            raise UserInputError(f"--weights is only used by --method raft, not {method!r}")
        if method == "dis":
            self._dis = (dis_settings or DISSettings()).create()
        elif method == "raft":
            if weights is None:
                raise UserInputError(
                    "--method raft needs a weights file (--weights FILE: torchvision raft_small "
                    "or raft_large state dict, .pth or .safetensors)"
                )
            from stillmotion.motion.raft import RAFTFlow  # torch: imported only when asked for

            self._raft = RAFTFlow(weights, device=device, iterations=iterations)

    def __call__(self, frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
        _check_pair(frame1, frame2)
        if self.method == "dis":
            flow = self._dis.calc(_gray_u8(frame1), _gray_u8(frame2), None)
        elif self.method == "farneback":
            flow = cv2.calcOpticalFlowFarneback(
                _gray_u8(frame1),
                _gray_u8(frame2),
                None,
                pyr_scale=0.5,
                levels=5,
                winsize=15,
                iterations=5,
                poly_n=7,
                poly_sigma=1.5,
                flags=0,
            )
        else:
            flow = self._raft(frame1, frame2)
        return np.ascontiguousarray(flow, np.float32)


# The name other stages look for first (training data preparation).
def compute_flow(frame1: np.ndarray, frame2: np.ndarray, method: str = "dis") -> np.ndarray:
    """Alias of :func:`estimate_flow` with the default settings."""
    return estimate_flow(frame1, frame2, method)


def estimate_flow(
    frame1: np.ndarray,
    frame2: np.ndarray,
    method: str = DEFAULT_METHOD,
    *,
    weights: str | os.PathLike | None = None,
    device: str | None = None,
    iterations: int = 12,
) -> np.ndarray:
    """Flow from ``frame1`` to ``frame2`` as float32 (H, W, 2) (dx, dy) at full resolution.

    Frames are RGB (H, W, 3) or grey (H, W), uint8 or float in [0, 1]. For many pairs build one
    :class:`FlowEstimator` (RAFT weights load once) or use :func:`iter_flows`.
    """
    return FlowEstimator(method, weights=weights, device=device, iterations=iterations)(frame1, frame2)


def dis_preset_flow(frame1: np.ndarray, frame2: np.ndarray, preset: str = "medium") -> np.ndarray:
    """OpenCV DIS with a stock preset (``ultrafast``, ``fast``, ``medium``): the benchmarks' reference."""
    presets = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }
    _check_pair(frame1, frame2)
    dis = cv2.DISOpticalFlow_create(presets[preset])
    return dis.calc(_gray_u8(frame1), _gray_u8(frame2), None)


def iter_flows(
    frames: Iterable[np.ndarray],
    method: str | FlowEstimator = DEFAULT_METHOD,
    *,
    weights: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool = False,
    total: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield the flow of each consecutive pair, streaming: only two frames are held at a time.

    ``total`` (the number of frames, when known) sizes the progress bar.
    """
    estimator = (
        method if isinstance(method, FlowEstimator) else FlowEstimator(method, weights=weights, device=device)
    )
    previous = None
    for frame in progress_iter(
        frames, total=total, desc=f"flow ({estimator.method})", enabled=progress, unit="frame"
    ):
        if previous is not None:
            yield estimator(previous, frame)
        previous = frame


def flow_sequence(
    frames: Iterable[np.ndarray],
    method: str | FlowEstimator = DEFAULT_METHOD,
    *,
    weights: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool = False,
    total: int | None = None,
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """Flow of every consecutive pair of ``frames`` as (N-1, H, W, 2), in ``dtype``.

    Holds the whole result in memory (N-1 fields); for long videos iterate :func:`iter_flows` and
    write each field out instead (``stillmotion flow`` does).
    """
    flows = [
        f.astype(dtype, copy=False)
        for f in iter_flows(frames, method, weights=weights, device=device, progress=progress, total=total)
    ]
    if not flows:
        raise UserInputError("a flow sequence needs at least two frames")
    return np.stack(flows)
