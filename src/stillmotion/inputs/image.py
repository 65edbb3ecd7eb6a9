"""Loading the still image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stillmotion.errors import UserInputError


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB ``uint8`` of shape (H, W, 3); EXIF rotation applied."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(
            f"image {path} does not exist" if not path.exists() else f"image {path} is not a file"
        )
    try:
        with Image.open(path) as im:
            from PIL import ImageOps

            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise UserInputError(f"cannot read image {path}: {exc}") from None
