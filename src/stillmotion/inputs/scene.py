"""Everything the user gives for one animation, loaded and checked together."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stillmotion.errors import UserInputError
from stillmotion.inputs.arrows import Arrow, arrow_from_any, load_arrows_file
from stillmotion.inputs.image import load_image
from stillmotion.inputs.mask import load_mask, mask_from_array, mask_from_polygons


@dataclass
class Scene:
    """The still image (H, W, 3) uint8, validated arrows in its pixels, and the mask (True = may move)."""

    image: np.ndarray
    arrows: list[Arrow]
    mask: np.ndarray | None = None

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


def load_scene(
    image: str | os.PathLike | np.ndarray,
    arrows: Sequence[str | Arrow] = (),
    arrows_file: str | os.PathLike | None = None,
    mask: str | os.PathLike | np.ndarray | None = None,
) -> Scene:
    """Load and validate image, arrows (``X0,Y0,X1,Y1[,S]`` strings or :class:`Arrow`) and mask.

    Arrows from the command line and from the file are combined. A mask given here wins over the
    file's own mask; a LabelMe file's polygons serve as the mask when nothing else gives one.
    Raises :class:`~stillmotion.errors.UserInputError` naming the arrow or file at fault.
    """
    img = check_image_array(image) if isinstance(image, np.ndarray) else load_image(_path(image, "image"))
    h, w = img.shape[:2]
    out = [arrow_from_any(a, i).validate(w, h) for i, a in enumerate(_arrow_list(arrows))]
    file_mask = None
    if arrows_file is not None:
        doc = load_arrows_file(_path(arrows_file, "arrows_file"))
        out.extend(doc.arrows_for_image(w, h))
        if doc.mask_path is not None:
            file_mask = load_mask(doc.mask_path, w, h)
        elif doc.mask_polygons:
            sx, sy = (w / doc.image_size[0], h / doc.image_size[1]) if doc.image_size else (1.0, 1.0)
            file_mask = mask_from_polygons(doc.mask_polygons, w, h, (sx, sy))
    if mask is None:
        m = file_mask
    elif isinstance(mask, np.ndarray):
        m = mask_from_array(mask, w, h)
    else:
        m = load_mask(_path(mask, "mask"), w, h)
    if m is not None and not m.any():
        where = f"mask {mask}" if isinstance(mask, str | os.PathLike) else "the mask"
        raise UserInputError(
            f"{where} is all black at {w}x{h}: no pixel may move, so the video would be still "
            "(white marks the region that moves)"
        )
    return Scene(img, out, m)


def _path(value: object, name: str) -> Path:
    if isinstance(value, str | os.PathLike) and os.fspath(value) != "":
        return Path(value)
    raise UserInputError(f"{name} must be a file path, got {value!r}")


def check_image_array(image: np.ndarray) -> np.ndarray:
    """An in-memory image must be RGB uint8 (H, W, 3), at least 2 px a side; returned contiguous."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise UserInputError(f"image array must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < 2:
        h, w = image.shape[:2]
        raise UserInputError(f"image array {w}x{h} is too small: at least 2x2 pixels")
    return np.ascontiguousarray(image)


def _arrow_list(arrows: object) -> list:
    if arrows is None:
        return []
    if isinstance(arrows, str | Arrow) or not isinstance(arrows, Sequence | np.ndarray):
        raise UserInputError(
            f"arrows must be a list of arrows (Arrow objects, 'X0,Y0,X1,Y1[,S]' strings or "
            f"(x0, y0, x1, y1[, s]) number tuples), got {arrows!r:.80}; wrap a single arrow in a list"
        )
    return list(arrows)
