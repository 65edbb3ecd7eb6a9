"""Decoding picture files (photos, masks, video frames) into 8-bit arrays, safely.

One place for what every reader needs: a clear :class:`UserInputError` naming the file for
anything Pillow cannot decode (including decompression bombs: pictures whose header claims more
than Pillow's ``MAX_IMAGE_PIXELS`` limit, twice its warning size), and 16-bit or 32-bit grey
pictures scaled to 8 bits instead of clipped (Pillow's ``convert("RGB")`` clips "I;16" to white).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from stillmotion.errors import UserInputError

# Pillow's modes of grey pictures deeper than 8 bits ("I;16*" from 16-bit PNG/TIFF, "I" 32-bit int, "F").
_DEEP_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _deep_grey_to_uint8(im: Image.Image) -> np.ndarray:
    a = np.asarray(im)
    if im.mode == "F":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0)
        # float pictures are either 0..1 or 0..255
        scale = 255.0 if a.size and a.max() <= 1.0 else 1.0
        return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    # 16-bit data (also what Pillow gives as "I" for 16-bit PNGs): full range 0..65535 -> 0..255
    return np.clip(np.rint(a.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise UserInputError(
            f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a file"
        )


def _open(path: Path, what: str) -> Image.Image:
    _check_file(path, what)
    try:
        im = Image.open(path)
        im.load()
        return im
    except Image.DecompressionBombError as exc:
        raise UserInputError(f"{what} {path} is too large to decode safely: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file: Pillow's decoders raise many kinds
        raise UserInputError(f"cannot read {what} {path}: {exc}") from None


def rgb_array(im: Image.Image) -> np.ndarray:
    """A decoded Pillow image as RGB uint8 (H, W, 3); deep grey (16-bit...) scaled, not clipped."""
    if im.mode in _DEEP_GREY:
        return np.repeat(_deep_grey_to_uint8(im)[..., None], 3, axis=2)
    return np.array(im if im.mode == "RGB" else im.convert("RGB"))


def grey_array(im: Image.Image) -> np.ndarray:
    """A decoded Pillow image as one uint8 (H, W) channel: its alpha when it has transparency (a
    painted-on layer), else its grey level (deep grey scaled, not clipped)."""
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        return np.array(im.convert("RGBA"))[..., 3]
    if im.mode in _DEEP_GREY:
        return _deep_grey_to_uint8(im)
    return np.array(im.convert("L"))


def read_rgb(path: str | os.PathLike, what: str = "image", *, exif: bool = True) -> np.ndarray:
    """The picture as RGB uint8 (H, W, 3); EXIF rotation applied when ``exif``."""
    path = Path(path)
    with _open(path, what) as im:
        try:
            if exif:
                ImageOps.exif_transpose(im, in_place=True)  # in place: no copy of a large photo
            return rgb_array(im)
        except Exception as exc:  # noqa: BLE001 - see _open
            raise UserInputError(f"cannot read {what} {path}: {exc}") from None


def read_grey(path: str | os.PathLike, what: str = "mask") -> np.ndarray:
    """The picture as one uint8 (H, W) channel (see :func:`grey_array`)."""
    path = Path(path)
    with _open(path, what) as im:
        try:
            return grey_array(im)
        except Exception as exc:  # noqa: BLE001 - see _open
            raise UserInputError(f"cannot read {what} {path}: {exc}") from None


def picture_size(path: str | os.PathLike, what: str = "frame") -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    path = Path(path)
    _check_file(path, what)
    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except Image.DecompressionBombError as exc:
        raise UserInputError(f"{what} {path} is too large to decode safely: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - see _open
        raise UserInputError(f"cannot read {what} {path}: {exc}") from None
