"""The mask of the region that may move: white moves, black stays still."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from stillmotion.errors import UserInputError


def load_mask(path: str | os.PathLike, width: int, height: int) -> np.ndarray:
    """Read a mask of any size as a boolean (H, W) array resized to the image (True = may move)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(
            f"mask {path} does not exist" if not path.exists() else f"mask {path} is not a file"
        )
    try:
        with Image.open(path) as im:
            if im.mode in ("RGBA", "LA") or "transparency" in im.info:
                # A painted-on transparent layer: the painted (opaque) pixels are the region.
                gray = np.asarray(im.convert("RGBA"))[..., 3]
            else:
                gray = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError) as exc:
        raise UserInputError(f"cannot read mask {path}: {exc}") from None
    return mask_from_array(gray, width, height)


def mask_from_array(gray: np.ndarray, width: int, height: int) -> np.ndarray:
    """Threshold a grey or boolean array at half range and resize it to (height, width)."""
    g = np.asarray(gray)
    if g.dtype == bool:
        g = g.astype(np.uint8) * 255
    if g.ndim == 3:
        g = g.mean(axis=2)
    g = g.astype(np.float32)
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
