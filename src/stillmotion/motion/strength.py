"""Global motion strength M_s (paper eq. 8): the mean flow magnitude over a clip."""

from __future__ import annotations

import numpy as np

from stillmotion.errors import UserInputError

REFERENCE_SIZE = 512


def motion_strength(flows: np.ndarray, reference_size: int | None = REFERENCE_SIZE) -> float:
    """M_s = (1/N) sum_k mean_p |F_k(p)| for flows (N, H, W, 2) or one field (H, W, 2).

    In pixels per frame, rescaled to a frame whose longer side is ``reference_size`` pixels so that
    the value means the same at every resolution (``None`` keeps the flows' own pixels).
    """
    raw = np.asarray(flows)
    real = np.issubdtype(raw.dtype, np.floating) or np.issubdtype(raw.dtype, np.integer)
    if raw.dtype == bool or not real:
        raise UserInputError(f"flows must hold real numbers (pixels per frame), got dtype {raw.dtype}")
    f = raw.astype(np.float32, copy=False)
    if f.ndim == 3:
        f = f[None]
    if f.ndim != 4 or f.shape[-1] != 2:
        raise UserInputError(f"flows must have shape (N, H, W, 2) or (H, W, 2), got {f.shape}")
    value = float(np.sqrt((f**2).sum(-1)).mean()) if f.size else 0.0
    if reference_size:
        value *= reference_size / max(f.shape[1], f.shape[2])
    return value
