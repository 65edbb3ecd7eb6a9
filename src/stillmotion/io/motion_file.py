"""Reading a given motion field from a file (``--motion``): ``.npy``, ``.npz`` or ``.flo``.

Units: a stored field is taken as (dx, dy) pixels per frame on its own grid. When it is resized
to the image, each component is scaled by the size ratio along its axis (a 512-px field used on a
1024-px photo moves twice as many pixels per frame, the same fraction of the picture).

Layouts accepted in ``.npy`` / ``.npz``: (H, W, 2), (2, H, W), (1, 2, H, W) or (1, H, W, 2), any
float dtype; or a sequence of F > 1 fields, (F, H, W, 2) or (F, 2, H, W), one per frame step (what
``stillmotion flow VIDEO -o flows.npz`` writes: a real video's motion), which animates step t -> t+1
along field t and repeats the last one. In an ``.npz`` the array is taken from the key ``motion``,
``flow`` or ``field``, or from the only array in the file. StyleCineGAN's samples (key ``motion``,
(1, 2, 512, 512), normalised to |v| <= 1) therefore move at most 1 px/frame at 512 px: exactly how
StyleCineGAN itself integrates them (its ``resize_flow`` doubles the vectors when it doubles the
grid).
``--strength`` multiplies the speed. Unknown-flow markers of ``.flo`` ground truth become zero;
NaN, infinite values and speeds above ``MAX_SPEED`` (:mod:`stillmotion.errors`) are refused.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import cv2
import numpy as np

from stillmotion.errors import MAX_SPEED, UserInputError
from stillmotion.io.flo import UNKNOWN_FLOW_THRESHOLD, read_flo

MOTION_SUFFIXES = (".npy", ".npz", ".flo")
_NPZ_KEYS = ("motion", "flow", "field")


def _to_fields(array: np.ndarray, path: Path) -> np.ndarray:
    """(H, W, 2) for one field, (F, H, W, 2) for a sequence of F > 1."""
    a = np.asarray(array)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim in (3, 4) and a.shape[-1] == 2:
        out = a
    elif a.ndim in (3, 4) and a.shape[-3] == 2:
        out = np.moveaxis(a, -3, -1)
    else:
        raise UserInputError(
            f"motion file {path}: expected a field of shape (H, W, 2), (2, H, W) or (1, 2, H, W), "
            f"or a sequence (F, H, W, 2) / (F, 2, H, W), got {a.shape}"
        )
    if not np.issubdtype(out.dtype, np.floating) and not np.issubdtype(out.dtype, np.integer):
        raise UserInputError(f"motion file {path}: expected real numbers, got dtype {out.dtype}")
    # Checked before the float32 cast, which would turn 1e300 into inf.
    if not np.isfinite(out).all():
        raise UserInputError(f"motion file {path} holds NaN or infinite values")
    check_speed(out, f"motion file {path}")
    out = np.ascontiguousarray(out, dtype=np.float32)
    if min(out.shape[-3:-1]) < 1 or out.shape[0] < 1:
        raise UserInputError(f"motion file {path}: the field is empty ({out.shape})")
    return out


def read_motion_file(path: str | os.PathLike) -> np.ndarray:
    """The field stored in ``path`` as float32 (h, w, 2) on its own grid, or (F, h, w, 2) for a
    sequence."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MOTION_SUFFIXES:
        raise UserInputError(
            f"motion file {path}: unsupported extension {path.suffix!r}; use .npy, .npz or .flo"
        )
    if not path.is_file():
        raise UserInputError(
            f"motion file {path} does not exist" if not path.exists() else f"{path} is not a file"
        )
    if suffix == ".flo":
        flow = read_flo(path)
        if np.isnan(flow).any():
            raise UserInputError(f"motion file {path} holds NaN values")
        # Middlebury's unknown-flow marker (> 1e9, also inf): no known motion there.
        flow[(np.abs(flow) >= UNKNOWN_FLOW_THRESHOLD).any(-1)] = 0.0
        field = flow
    else:
        with open(path, "rb") as fh:
            head = fh.read(6)
        if not head.startswith((b"PK", b"\x93NUMPY")):
            kind = ".npz (zip)" if suffix == ".npz" else ".npy"
            raise UserInputError(
                f"motion file {path} is not a NumPy {kind} file (it starts with {head!r}); write it with "
                f"numpy.{'savez' if suffix == '.npz' else 'save'}"
            )
        try:
            # allow_pickle=False: a motion file is data; never run code from it.
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise UserInputError(f"cannot read motion file {path}: {exc}") from None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = list(loaded.keys())
                key = next((k for k in _NPZ_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise UserInputError(
                        f"motion file {path}: no array named {' / '.join(_NPZ_KEYS)} among {keys}"
                    )
                try:
                    raw = loaded[key]
                except ValueError as exc:
                    raise UserInputError(f"cannot read array {key!r} of motion file {path}: {exc}") from None
        else:
            raw = loaded
        field = _to_fields(raw, path)
    if not np.isfinite(field).all():
        raise UserInputError(f"motion file {path} holds NaN or infinite values")
    check_speed(field, f"motion file {path}")
    return field


def check_speed(field: np.ndarray, where: str, strength: float = 1.0) -> None:
    """Refuse a field whose speed (times ``strength``) passes :data:`~stillmotion.errors.MAX_SPEED`."""
    top = float(np.abs(field).max(initial=0.0)) * float(strength)
    if not top <= MAX_SPEED:  # also catches inf and NaN
        extra = f" at strength {strength:g}" if strength != 1.0 else ""
        raise UserInputError(
            f"{where} moves up to {top:.3g} px per frame{extra}; the limit is {MAX_SPEED:g} px per frame "
            "(faster motion leaves the picture within one frame)"
        )


def resize_field(field: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resample a (h, w, 2) pixels-per-frame field to (height, width, 2), scaling the vectors; a
    sequence (F, h, w, 2) field by field."""
    if field.ndim == 4:
        return np.stack([resize_field(f, width, height) for f in field])
    h, w = field.shape[:2]
    if (w, h) == (width, height):
        return np.ascontiguousarray(field, dtype=np.float32)
    shrink = width < w and height < h
    out = cv2.resize(
        field.astype(np.float32),
        (width, height),
        interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
    )
    out[..., 0] *= width / w
    out[..., 1] *= height / h
    return out


def load_motion_field(path: str | os.PathLike, width: int, height: int) -> np.ndarray:
    """Read a motion file and return it at (height, width, 2) (or (F, height, width, 2) for a sequence),
    vectors in that grid's pixels."""
    return resize_field(read_motion_file(path), width, height)
