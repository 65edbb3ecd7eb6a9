"""Bring image, motion field and mask of any size to a size the model accepts (resize + center crop).

The three are transformed together: the image is scaled so that it covers the target size and
center-cropped; the field gets the same geometry and its vectors are multiplied by the scale so
they stay in pixels per frame of the new frame; the mask follows with area interpolation.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from stillmotion.errors import UserInputError


def default_size(width: int, height: int, long_side: int, multiple: int) -> tuple[int, int]:
    """(width, height) keeping the aspect ratio, longer side ``long_side``, both rounded to ``multiple``."""
    scale = long_side / max(width, height)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    return w, h


def check_size(width: int, height: int, multiple: int) -> None:
    if width < multiple or height < multiple or width % multiple or height % multiple:
        raise UserInputError(
            f"size {width}x{height} is not accepted by this model: width and height must be positive "
            f"multiples of {multiple}"
        )


def _crop_box(w: int, h: int, tw: int, th: int) -> tuple[float, int, int, int, int]:
    scale = max(tw / w, th / h)
    rw, rh = max(tw, int(math.ceil(w * scale - 1e-6))), max(th, int(math.ceil(h * scale - 1e-6)))
    x0, y0 = (rw - tw) // 2, (rh - th) // 2
    return scale, rw, rh, x0, y0


def _resize(a: np.ndarray, rw: int, rh: int) -> np.ndarray:
    shrink = rw < a.shape[1] or rh < a.shape[0]
    return cv2.resize(a, (rw, rh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def fit_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (height, width, 3); unchanged when already that size."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale, rw, rh, x0, y0 = _crop_box(w, h, width, height)
    out = _resize(image, rw, rh)
    return np.ascontiguousarray(out[y0 : y0 + height, x0 : x0 + width])


def fit_points(points: np.ndarray, size: tuple[int, int], width: int, height: int) -> np.ndarray:
    """(n, 2) x, y pixel positions in an image of ``size`` (W, H) -> the same points in the fitted image."""
    scale, _, _, x0, y0 = _crop_box(size[0], size[1], width, height)
    return np.asarray(points, np.float64) * scale - np.array([x0, y0])


def fit_field(field: np.ndarray, width: int, height: int) -> np.ndarray:
    """float32 (H, W, 2) or (N, H, W, 2) px/frame -> the same at (height, width), vectors rescaled."""
    if field.ndim == 4:
        return np.stack([fit_field(f, width, height) for f in field])
    if field.ndim != 3 or field.shape[2] != 2:
        raise UserInputError(f"motion field must have shape (H, W, 2) or (N, H, W, 2), got {field.shape}")
    h, w = field.shape[:2]
    if (w, h) == (width, height):
        return field.astype(np.float32, copy=False)
    scale, rw, rh, x0, y0 = _crop_box(w, h, width, height)
    out = cv2.resize(
        field.astype(np.float32), (rw, rh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    out[..., 0] *= rw / w
    out[..., 1] *= rh / h
    return np.ascontiguousarray(out[y0 : y0 + height, x0 : x0 + width])


def fit_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """bool (H, W) -> bool (height, width)."""
    h, w = mask.shape[:2]
    if (w, h) == (width, height):
        return mask.astype(bool)
    scale, rw, rh, x0, y0 = _crop_box(w, h, width, height)
    out = cv2.resize(mask.astype(np.float32), (rw, rh), interpolation=cv2.INTER_AREA)
    return out[y0 : y0 + height, x0 : x0 + width] >= 0.5


def fit_inputs(
    image: np.ndarray, mask: np.ndarray | None, motion: np.ndarray | None, width: int, height: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Image, mask and motion field brought to ``width x height`` the same way (every backbone's
    preparation): the field checked finite and zeroed outside the mask."""
    image = fit_image(image, width, height)
    mask_fit = None if mask is None else fit_mask(np.asarray(mask), width, height)
    field = None
    if motion is not None:
        motion = np.asarray(motion, np.float32)
        if not np.all(np.isfinite(motion)):
            raise UserInputError("the motion field holds non-finite values")
        field = fit_field(motion, width, height)
        if mask_fit is not None:
            field = field * mask_fit[..., None]
    return image, mask_fit, field


def still_alpha(mask: np.ndarray, feather: int) -> np.ndarray:
    """Weight (H, W) float32 of the input pixels pasted after decoding: 1 on the whole still region (mask
    False), so still pixels are exactly the input's, fading to 0 over ``feather`` pixels into the moving
    region (the seam is hidden on the side that moves anyway)."""
    still = (~mask).astype(np.float32)
    if feather <= 0 or still.min() == 1.0 or still.max() == 0.0:
        return still
    # distance of each moving pixel to the nearest still one (0 on the still region)
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.maximum(still, np.clip(1.0 - dist / (feather + 1.0), 0.0, 1.0)).astype(np.float32)
