"""Everything the user gives for one animation, loaded and checked together."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stillmotion.inputs.arrows import Arrow, load_arrows_file, parse_arrow_option
from stillmotion.inputs.image import load_image
from stillmotion.inputs.mask import load_mask, mask_from_polygons


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
    img = image if isinstance(image, np.ndarray) else load_image(image)
    h, w = img.shape[:2]
    out: list[Arrow] = []
    for i, a in enumerate(arrows):
        out.append((a if isinstance(a, Arrow) else parse_arrow_option(a, i)).validate(w, h))
    file_mask = None
    if arrows_file is not None:
        doc = load_arrows_file(arrows_file)
        out.extend(doc.arrows_for_image(w, h))
        if doc.mask_path is not None:
            file_mask = load_mask(doc.mask_path, w, h)
        elif doc.mask_polygons:
            sx, sy = (w / doc.image_size[0], h / doc.image_size[1]) if doc.image_size else (1.0, 1.0)
            file_mask = mask_from_polygons(doc.mask_polygons, w, h, (sx, sy))
    if mask is None:
        m = file_mask
    elif isinstance(mask, np.ndarray):
        from stillmotion.inputs.mask import mask_from_array

        m = mask_from_array(mask, w, h)
    else:
        m = load_mask(Path(mask), w, h)
    return Scene(img, out, m)
