"""The mask of the region that may move: white moves, black stays still."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from stillmotion.errors import UserInputError
from stillmotion.io.picture import read_grey


def load_mask(path: str | os.PathLike, width: int, height: int) -> np.ndarray:
    """Read a mask of any size as a boolean (H, W) array resized to the image (True = may move)."""
    gray = read_grey(Path(path), "mask")
    return mask_from_array(gray, width, height)


def mask_from_array(gray: np.ndarray, width: int, height: int) -> np.ndarray:
    """Threshold a mask array and resize it to (height, width): True = may move.

    Accepted: (H, W), (H, W, 1) or (H, W, 3) of booleans, of 0..255 grey levels (threshold at half
    range), or of 0/1 values (integer or float arrays whose largest value is at most 1).
    """
    g = np.asarray(gray)
    if g.ndim == 3 and g.shape[2] in (1, 3):
        g = g.mean(axis=2) if g.shape[2] == 3 else g[..., 0]
    if g.ndim != 2 or g.size == 0:
        raise UserInputError(
            f"mask must be an (H, W) array (or (H, W, 1) / (H, W, 3)) with at least one pixel, "
            f"got shape {g.shape}"
        )
    if g.dtype == bool:
        g = g.astype(np.uint8) * 255
    elif not (np.issubdtype(g.dtype, np.integer) or np.issubdtype(g.dtype, np.floating)):
        raise UserInputError(f"mask must hold booleans or real numbers, got dtype {g.dtype}")
    g = g.astype(np.float32)
    if not np.isfinite(g).all():
        raise UserInputError("mask holds NaN or infinite values")
    if g.max() <= 1.0:
        g = g * 255.0  # a 0/1 mask
    if g.shape != (height, width):
        g = cv2.resize(g, (width, height), interpolation=cv2.INTER_LINEAR)
    return g >= 127.5


def mask_from_polygons(
    polygons: Sequence[Sequence[tuple[float, float]]],
    width: int,
    height: int,
    scale: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Rasterise polygons (e.g. LabelMe's) into a boolean mask."""
    canvas = np.zeros((height, width), np.uint8)
    for poly in polygons:
        pts = np.round(np.asarray(poly, np.float64) * np.asarray(scale)).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 255)
    return canvas > 0
