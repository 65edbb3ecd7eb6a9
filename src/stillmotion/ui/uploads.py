"""Checking what browsers upload: photos and masks are accepted only when Pillow decodes them.

The file name and the browser's content type are never trusted: the bytes are decoded, limited in
size before and after decompression, and only a short list of raster formats is opened at all (no
EPS/PDF plug-ins that hand data to external programs). A truncated file fails here, with a message,
instead of inside an engine.
"""

from __future__ import annotations

import io
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stillmotion.errors import UserInputError
from stillmotion.inputs.mask import mask_from_array
from stillmotion.io.picture import grey_array, rgb_array

# Raster formats a phone, camera or editor produces (Pillow's JPEG reader also opens phones' MPO files).
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
DEFAULT_MAX_PIXELS = 50_000_000  # a 48 MP phone photo passes; a decompression bomb does not
MAX_SIDE = 20_000


class UploadRejected(UserInputError):
    """An upload the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.2f} MB"


def check_upload_size(data: bytes, name: str, max_bytes: int) -> None:
    if len(data) == 0:
        raise UploadRejected(f"{name} is empty")
    if len(data) > max_bytes:
        raise UploadRejected(
            f"{name} is larger than the upload limit of {_mb(max_bytes)} "
            "(start the server with a larger --max-upload-mb to allow it)",
            413,
        )


def declared_pixels(fileobj: BinaryIO) -> int:
    """Pixels an upload's header declares (0 when it is no image this app reads); reads the header only.

    The server uses it to tell what decoding will hold before it decodes anything.
    """
    pos = fileobj.tell()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(fileobj, formats=ACCEPTED_FORMATS) as im:
                w, h = im.size
                return int(w) * int(h)
    except Exception:  # whatever it is, decoding will say so properly
        return 0
    finally:
        fileobj.seek(pos)


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Open and fully decode the first frame; raise :class:`UploadRejected` for anything else."""
    with warnings.catch_warnings():
        # Pillow only warns between its own limit and twice that; make every bomb an error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        except UnidentifiedImageError:
            raise UploadRejected(
                f"{name} is not an image this app reads (accepted: JPEG, PNG, WebP, BMP, GIF, TIFF)", 415
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadRejected(
                f"{name} declares too many pixels (a decompression bomb?); refused", 413
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise UploadRejected(f"{name} could not be read as an image: {exc}", 415) from None
        w, h = im.size
        # Checked from the header, before a single pixel is decompressed.
        if w * h > max_pixels or max(w, h) > MAX_SIDE:
            raise UploadRejected(
                f"{name} is {w}x{h} = {w * h / 1e6:.1f} megapixels; the limit is "
                f"{max_pixels / 1e6:.0f} megapixels "
                f"and {MAX_SIDE} pixels a side (a decompression bomb, or a photo to downscale first)",
                413,
            )
        if w < 2 or h < 2:
            raise UploadRejected(f"{name} is {w}x{h}: too small to animate")
        try:
            im.seek(0)
            im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadRejected(
                f"{name} declares too many pixels (a decompression bomb?); refused", 413
            ) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            # Truncated JPEG/PNG: Pillow says "image file is truncated" or similar.
            raise UploadRejected(
                f"{name} is damaged or truncated and cannot be decoded ({exc})", 415
            ) from None
    return im


def decode_image_upload(
    data: bytes, name: str, *, max_bytes: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Bytes of an uploaded photo -> RGB ``uint8`` (H, W, 3), EXIF rotation applied."""
    check_upload_size(data, name, max_bytes)
    im = _open_checked(data, name, max_pixels)
    try:
        ImageOps.exif_transpose(im, in_place=True)  # in place: no copy of a large photo
        return rgb_array(im)  # 16-bit grey scaled to 8 bits, not clipped to white
    finally:
        im.close()


def decode_mask_upload(
    data: bytes, name: str, width: int, height: int, *, max_bytes: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Bytes of an uploaded (or brush-painted) mask -> bool (H, W) at the photo's size; True may move.

    Like ``stillmotion.inputs.mask.load_mask``: a transparent layer counts its painted (opaque)
    pixels, anything else is thresholded at half grey.
    """
    check_upload_size(data, name, max_bytes)
    im = _open_checked(data, name, max_pixels)
    try:
        gray = grey_array(im)
    finally:
        im.close()
    return mask_from_array(gray, width, height)
