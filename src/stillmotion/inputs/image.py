"""Loading the still image."""

from __future__ import annotations

import os

import numpy as np

from stillmotion.io.picture import read_rgb


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB ``uint8`` of shape (H, W, 3); EXIF rotation applied.

    16-bit grey pictures are scaled to 8 bits; undecodable files and decompression bombs raise
    :class:`~stillmotion.errors.UserInputError` naming the file."""
    return read_rgb(path, "image")
