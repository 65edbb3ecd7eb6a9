"""Pixel-level frame metrics: PSNR, SSIM and adjacent-frame consistency.

Frames are uint8 RGB arrays (..., H, W, 3) or any real arrays with a stated ``data_range``.
SSIM follows Wang et al. (2004) as scikit-image computes it with ``gaussian_weights=True``:
an 11-tap Gaussian window (sigma 1.5, truncated at 3.5 sigma), population statistics, K1 = 0.01,
K2 = 0.03, the mean taken over the pixels whose window lies fully inside the image, then over
channels. Only those interior pixels are kept, so the border handling of the filter does not
change the result.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _f64(frames: np.ndarray) -> np.ndarray:
    # float64: SSIM's variances are differences of large squares (up to 255^2); float32 loses ~1e-4.
    return np.asarray(frames, dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio of two same-shaped images or videos, in dB (inf when identical)."""
    x, y = _f64(a), _f64(b)
    if x.shape != y.shape:
        raise ValueError(f"PSNR needs same-shaped inputs, got {x.shape} and {y.shape}")
    mse = float(((x - y) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def psnr_per_frame(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """PSNR of each frame pair of two videos (N, H, W, C) -> (N,) (inf where a pair is identical)."""
    return np.array([psnr(x, y, data_range) for x, y in zip(a, b, strict=True)])


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> np.ndarray:
    """Normalised 1-D Gaussian taps, radius ``int(truncate * sigma + 0.5)`` as scipy's filter uses."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _ssim_map_mean(x: np.ndarray, y: np.ndarray, data_range: float, taps: np.ndarray) -> float:
    """Mean SSIM of one single-channel pair over the interior pixels (window fully inside)."""
    r = len(taps) // 2

    def blur(m: np.ndarray) -> np.ndarray:
        # Separable filter in float64; the border mode does not matter: the border is cropped below.
        return cv2.sepFilter2D(m, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REFLECT)[r:-r, r:-r]

    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM of two images (H, W, C) or (H, W): the mean over channels."""
    x, y = _f64(a), _f64(b)
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs same-shaped inputs, got {x.shape} and {y.shape}")
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    taps = gaussian_window()
    if min(x.shape[0], x.shape[1]) <= len(taps):
        raise ValueError(f"SSIM needs frames larger than {len(taps)}x{len(taps)} pixels, got {x.shape[:2]}")
    return float(np.mean([_ssim_map_mean(x[..., c], y[..., c], data_range, taps) for c in range(x.shape[2])]))


def ssim_per_frame(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """SSIM of each frame pair of two videos (N, H, W, C) or (N, H, W) -> (N,)."""
    if len(a) != len(b):
        raise ValueError(f"SSIM needs videos of the same length, got {len(a)} and {len(b)}")
    return np.array([ssim(x, y, data_range) for x, y in zip(a, b, strict=True)])


def adjacent_mean_abs_diff(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference between frame t and t+1 (N, H, W, C) -> (N-1,), in the frames' units."""
    x = np.asarray(frames, np.float32)
    if len(x) < 2:
        return np.zeros(0)
    return np.array([float(np.abs(x[t + 1] - x[t]).mean()) for t in range(len(x) - 1)])


def adjacent_ssim(frames: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """SSIM between frame t and t+1 -> (N-1,): 1 for a still video, lower for flicker or fast change."""
    if len(frames) < 2:
        return np.zeros(0)
    return ssim_per_frame(frames[:-1], frames[1:], data_range)
