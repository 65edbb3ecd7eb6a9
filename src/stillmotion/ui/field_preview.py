"""The live motion-field picture: arrows -> dense field at reduced resolution -> colour over the photo.

It must come back within a fraction of a second after every edit, so the field is computed on a
copy of the photo whose longer side is ``PREVIEW_SIDE`` pixels (the field varies smoothly over
about a third of the frame; only the mask's edges come out coarser). Colours follow the
optical-flow colour wheel of ``stillmotion.motion.viz`` (hue = direction, saturation = speed), as in
``stillmotion motion``'s pictures.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from stillmotion.inputs.arrows import Arrow
from stillmotion.motion.dense import dense_flow_from_arrows
from stillmotion.motion.viz import flow_to_color

PREVIEW_SIDE = 320


def preview_size(width: int, height: int, side: int = PREVIEW_SIDE) -> tuple[int, int]:
    scale = min(1.0, side / max(width, height))
    return max(2, round(width * scale)), max(2, round(height * scale))


def field_at_size(
    arrows: Sequence[Arrow], width: int, height: int, size: tuple[int, int], mask: np.ndarray | None = None
) -> np.ndarray:
    """Dense field of ``arrows`` (drawn on a ``width`` x ``height`` photo) at ``size`` = (w, h)."""
    w, h = size
    scaled = [a.scaled(w / width, h / height) for a in arrows]
    small_mask = None
    if mask is not None:
        small_mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return dense_flow_from_arrows(scaled, w, h, mask=small_mask)


def _draw_arrows(canvas: np.ndarray, arrows: Sequence[Arrow]) -> None:
    """Thin white arrows over the picture so the colours can be read against what was drawn."""
    for arrow in arrows:
        pts = np.round(np.asarray(arrow.points) * 16).astype(np.int32)  # 4 fractional bits: sub-pixel lines
        cv2.polylines(canvas, [pts[: -1 if len(pts) > 2 else 1]], False, (255, 255, 255), 1, cv2.LINE_AA, 4)
        tip = max(0.15, min(0.5, 8.0 * 16 / max(float(np.hypot(*(pts[-1] - pts[-2]))), 1.0)))
        cv2.arrowedLine(
            canvas,
            tuple(map(int, pts[-2])),
            tuple(map(int, pts[-1])),
            (255, 255, 255),
            1,
            cv2.LINE_AA,
            4,
            tip,
        )


def render_field_preview(
    image: np.ndarray, arrows: Sequence[Arrow], mask: np.ndarray | None, strength: float = 1.0
) -> tuple[bytes, dict]:
    """PNG of the coloured field over a dimmed photo, and figures about it (speeds in photo px/frame)."""
    height, width = image.shape[:2]
    w, h = preview_size(width, height)
    small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    field = (
        field_at_size(arrows, width, height, (w, h), mask) * float(strength)
        if arrows
        else np.zeros((h, w, 2))
    )
    field = field.astype(np.float32)
    moving = np.hypot(field[..., 0], field[..., 1]) > 0
    colors = flow_to_color(field)
    gray = cv2.cvtColor(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB).astype(np.float32)
    out = gray * 0.55
    out[moving] = 0.35 * gray[moving] + 0.65 * colors[moving].astype(np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)
    _draw_arrows(out, [a.scaled(w / width, h / height) for a in arrows])
    buf = io.BytesIO()
    Image.fromarray(out).save(buf, "PNG", optimize=False, compress_level=1)
    speed = np.hypot(field[..., 0], field[..., 1]) * (width / w)
    stats = {
        "max_speed": round(float(speed.max()), 2),
        "moving_fraction": round(float(moving.mean()), 4),
        "width": w,
        "height": h,
    }
    return buf.getvalue(), stats
