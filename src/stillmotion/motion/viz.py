"""Pictures of motion: the standard flow colour wheel, arrows and mask outlines, flow videos.

Colour coding (Baker et al., "A Database and Evaluation Methodology for Optical Flow", the
Middlebury convention every flow paper uses): the direction of a vector is the hue on a wheel of
55 colours built from six ramps (red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11,
blue-magenta 13, magenta-red 6); the magnitude, relative to the largest one shown, is the
saturation (white = still). In image coordinates (y down): right is red, down yellow, left
cyan-blue, up violet, as in the published wheel.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from stillmotion.errors import UserInputError
from stillmotion.inputs.arrows import Arrow
from stillmotion.io.video_writer import open_video_writer, video_format

# (length of each ramp, the channel that changes, rising or falling) around the wheel.
_RAMPS = ((15, 1, True), (6, 0, False), (4, 2, True), (11, 1, False), (13, 0, True), (6, 2, False))
ARROW_COLOR = (255, 64, 32)
MASK_COLOR = (255, 255, 0)
FIELD_LINE_COLOR = (40, 40, 40)


def make_colorwheel() -> np.ndarray:
    """The 55 wheel colours as float (55, 3) RGB in [0, 1], starting at red, in Baker et al.'s order."""
    colours = []
    rgb = np.array([1.0, 0.0, 0.0])
    for length, channel, rising in _RAMPS:
        for i in range(length):
            c = rgb.copy()
            c[channel] = i / length if rising else 1.0 - i / length
            colours.append(c)
        rgb = colours[-1].copy()
        rgb[channel] = 1.0 if rising else 0.0
    return np.asarray(colours)


_WHEEL = make_colorwheel()


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) picture of a (H, W, 2) flow with the standard colour wheel.

    Magnitudes are divided by ``max_magnitude`` (default: the largest finite one); longer vectors
    are drawn darker. Non-finite or unknown (> 1e9) vectors are black.
    """
    flow = np.asarray(flow, np.float32)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise UserInputError(f"flow must have shape (H, W, 2), got {flow.shape}")
    u, v = flow[..., 0], flow[..., 1]
    valid = np.isfinite(u) & np.isfinite(v) & (np.abs(u) < 1e9) & (np.abs(v) < 1e9)
    u = np.where(valid, u, 0.0)
    v = np.where(valid, v, 0.0)
    magnitude = np.hypot(u, v)
    if max_magnitude is None:
        max_magnitude = float(magnitude.max()) if magnitude.size else 0.0
    scale = max(float(max_magnitude), 1e-9)
    radius = magnitude / scale
    n = len(_WHEEL)
    # Angle measured so that +x (right) is the wheel's first colour (red), going through +y.
    position = (np.arctan2(-v, -u) / np.pi + 1.0) / 2.0 * (n - 1)
    k0 = np.floor(position).astype(np.int64) % n
    k1 = (k0 + 1) % n
    frac = (position - np.floor(position))[..., None]
    colour = (1 - frac) * _WHEEL[k0] + frac * _WHEEL[k1]
    r = radius[..., None]
    colour = np.where(r <= 1, 1 - r * (1 - colour), colour * 0.75)
    out = np.round(colour * 255).astype(np.uint8)
    out[~valid] = 0
    return out


def draw_arrows(
    image: np.ndarray,
    arrows: Sequence[Arrow],
    color: tuple[int, int, int] = ARROW_COLOR,
    thickness: int | None = None,
) -> np.ndarray:
    """A copy of ``image`` (RGB uint8) with each arrow or trajectory drawn, head on its last segment."""
    canvas = np.ascontiguousarray(image, np.uint8).copy()
    t = thickness or max(1, round(max(canvas.shape[:2]) / 300))
    for arrow in arrows:
        pts = [(round(x), round(y)) for x, y in arrow.points]
        if len(pts) > 2:
            cv2.polylines(canvas, [np.asarray(pts[:-1], np.int32)], False, color, t, cv2.LINE_AA)
        a, b = pts[-2], pts[-1]
        seg = max(np.hypot(b[0] - a[0], b[1] - a[1]), 1.0)
        # Head of a fixed size in pixels, not proportional to the segment.
        tip = min(0.5, 6.0 * t / seg)
        cv2.arrowedLine(canvas, a, b, color, t, cv2.LINE_AA, tipLength=tip)
    return canvas


def draw_mask_outline(
    image: np.ndarray,
    mask: np.ndarray,
    color: tuple[int, int, int] = MASK_COLOR,
    thickness: int | None = None,
) -> np.ndarray:
    """A copy of ``image`` with the outline of the moving region (``mask`` True) drawn."""
    canvas = np.ascontiguousarray(image, np.uint8).copy()
    if mask.shape != canvas.shape[:2]:
        raise UserInputError(f"mask shape {mask.shape} does not match the image {canvas.shape[:2]}")
    t = thickness or max(1, round(max(canvas.shape[:2]) / 400))
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(canvas, contours, -1, color, t, cv2.LINE_AA)
    return canvas


def draw_flow_vectors(
    image: np.ndarray,
    flow: np.ndarray,
    step: int | None = None,
    scale: float | None = None,
    color: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """A copy of ``image`` with a grid of small arrows showing ``flow`` (scaled to be readable)."""
    canvas = np.ascontiguousarray(image, np.uint8).copy()
    h, w = flow.shape[:2]
    step = step or max(8, round(max(h, w) / 24))
    ys, xs = np.mgrid[step // 2 : h : step, step // 2 : w : step]
    vec = flow[ys, xs]
    mag = np.hypot(vec[..., 0], vec[..., 1])
    top = float(mag.max()) if mag.size else 0.0
    if top <= 1e-6:
        return canvas
    scale = scale if scale is not None else 0.9 * step / top
    for x, y, (dx, dy), m in zip(xs.ravel(), ys.ravel(), vec.reshape(-1, 2), mag.ravel(), strict=True):
        if m < 0.05 * top:
            continue
        end = (round(x + dx * scale), round(y + dy * scale))
        cv2.arrowedLine(canvas, (int(x), int(y)), end, color, 1, cv2.LINE_AA, tipLength=0.3)
    return canvas


def field_picture(
    image: np.ndarray,
    flow: np.ndarray,
    arrows: Sequence[Arrow] = (),
    mask: np.ndarray | None = None,
    *,
    layout: str = "side",
    max_magnitude: float | None = None,
) -> np.ndarray:
    """The picture ``stillmotion motion`` writes: image with arrows and mask outline, and the field.

    ``layout="side"``: the image (arrows, mask outline) on the left, the colour-coded field (same
    arrows) on the right. ``layout="overlay"``: the colour-coded field blended over the image.
    """
    if image.shape[:2] != flow.shape[:2]:
        raise UserInputError(f"image {image.shape[:2]} and field {flow.shape[:2]} differ in size")
    colours = flow_to_color(flow, max_magnitude)
    if layout == "overlay":
        moving = np.hypot(flow[..., 0], flow[..., 1]) > 0
        alpha = np.where(moving, 0.6, 0.0)[..., None]
        left = (
            (image.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha)
            .round()
            .astype(np.uint8)
        )
        panels = [left]
    elif layout == "side":
        panels = [image.astype(np.uint8), colours]
    else:
        raise UserInputError(f"unknown layout {layout!r}; choose side or overlay")
    out = []
    for i, p in enumerate(panels):
        # On the colour-coded panel, wheel-coloured lines would read as motion: draw them dark.
        on_field = layout == "side" and i == 1
        if mask is not None:
            p = draw_mask_outline(p, mask, FIELD_LINE_COLOR if on_field else MASK_COLOR)
        out.append(draw_arrows(p, arrows, FIELD_LINE_COLOR if on_field else ARROW_COLOR))
    return np.concatenate(out, axis=1)


def flow_video_frame(frame: np.ndarray, flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """One frame of a flow video: the frame on the left, its colour-coded flow on the right."""
    return np.concatenate(
        [np.ascontiguousarray(frame[..., :3], np.uint8), flow_to_color(flow, max_magnitude)], 1
    )


class FlowVideoWriter:
    """Streaming video of frames beside their colour-coded flow; written atomically.

        with FlowVideoWriter("flow.mp4", fps=25) as viz:
            viz.write(frame, flow)      # frame k with the flow k -> k+1

    Any output :mod:`stillmotion.io.video_writer` takes (.mp4, .gif, .webp, a folder of PNGs).
    One colour scale holds for the whole video so that speeds compare across frames:
    ``max_magnitude``, or else the 99th percentile of the first field's magnitudes (at least 1 px).
    """

    def __init__(self, path: str | os.PathLike, fps: float, *, max_magnitude: float | None = None) -> None:
        self.path = Path(path)
        video_format(self.path)  # refuses unknown extensions before any work is done
        self.fps = float(fps)
        self.max_magnitude = max_magnitude
        self._writer = None

    @property
    def frames(self) -> int:
        return self._writer.frames_written if self._writer is not None else 0

    def __enter__(self) -> FlowVideoWriter:
        self._writer = open_video_writer(self.path, fps=self.fps)
        return self

    def write(self, frame: np.ndarray, flow: np.ndarray) -> None:
        if self.max_magnitude is None:
            mag = np.hypot(flow[..., 0], flow[..., 1])
            self.max_magnitude = max(float(np.percentile(mag, 99)), 1.0)
        self._writer.write(flow_video_frame(frame, flow, self.max_magnitude))

    def finish(self) -> None:
        """Flush the video under its temporary name; leaving the ``with`` block only renames it."""
        self._writer.finish()

    def __exit__(self, exc_type, exc, tb) -> None:
        self._writer.__exit__(exc_type, exc, tb)


def render_flow_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    flows: Iterable[np.ndarray],
    fps: float,
    *,
    max_magnitude: float | None = None,
) -> Path:
    """Write a video of each frame beside its colour-coded flow (see :class:`FlowVideoWriter`).

    ``frames`` and ``flows`` are consumed in step, one pair at a time, so memory stays flat.
    """
    with FlowVideoWriter(path, fps, max_magnitude=max_magnitude) as viz:
        for frame, flow in zip(frames, flows, strict=False):
            viz.write(frame, flow)
    return Path(path)
