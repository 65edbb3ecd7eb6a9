"""Frechet distance between Gaussians fitted to two feature sets (the FID / FVD formula).

d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

The trace of the matrix square root is computed through symmetric eigen-decompositions:
(S1 S2)^(1/2) is similar to (A S2 A)^(1/2) with A = S1^(1/2), and A S2 A is symmetric positive
semi-definite, so tr = sum sqrt(eig(A S2 A)). This stays real and stable for the rank-deficient
covariances that small sets give, where scipy.linalg.sqrtm can return complex noise.
"""

from __future__ import annotations

import warnings

import numpy as np


class SmallSampleWarning(UserWarning):
    """A feature set has too few samples for a full-rank covariance: the distance is biased."""


def gaussian_stats(features: np.ndarray, name: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (n, D); warns when n <= D (rank-deficient)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 1:
        raise ValueError(f"{name} must be a non-empty (n, D) array, got shape {f.shape}")
    n, d = f.shape
    if n <= d:
        warnings.warn(
            f"{name}: {n} samples for {d}-d features: the covariance is rank-deficient (needs n > {d}); "
            f"the Frechet distance is biased and only comparable between sets of the same size",
            SmallSampleWarning,
            stacklevel=2,
        )
    mu = f.mean(0)
    sigma = np.cov(f, rowvar=False) if n > 1 else np.zeros((d, d))
    return mu, np.atleast_2d(sigma)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (>= 0)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched statistics: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    a = _sqrt_psd(s1)
    eig = np.linalg.eigvalsh(a @ s2 @ a)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum())
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)
    # Rounding can leave -1e-12 for identical sets.
    return max(d, 0.0)


def frechet_distance_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """Frechet distance between two feature sets (n1, D) and (n2, D)."""
    return frechet_distance(*gaussian_stats(f1, "set 1"), *gaussian_stats(f2, "set 2"))
