"""Streaming video writers chosen by the output's extension; frames go to disk as they come.

====================  ============================================================================
output                what is written
====================  ============================================================================
``clip.mp4``          H.264 (libx264, yuv420p, CRF 18; preset by frame size, :func:`x264_preset`) via
                      PyAV, ``+faststart`` so browsers start
                      playing before the whole file has arrived. yuv420p needs even sides: an odd
                      width or height is padded by repeating the last column/row (nothing is cut).
``clip.gif``          GIF looping forever; one 256-colour palette taken from the first frame (still
                      parts keep exactly the same colours in every frame, so they do not shimmer),
                      Floyd-Steinberg dithering.
``clip.webp``         animated WebP (libwebp, quality 90) looping forever.
``frames/`` or        a folder of ``frame_00000.png``, ``frame_00001.png``, ... when the path ends
``frames``            with ``/`` or has no extension. An existing folder is replaced only when it
                      is empty or holds nothing but such frames (else ``overwrite=True``).
====================  ============================================================================

Memory does not depend on the number of frames: each frame is encoded and dropped. Output is atomic
(:func:`stillmotion.io.atomic.atomic_path`): it is written under a temporary name and renamed into
place only when the writer closes without error, so a failure never leaves a half-written video.

Use::

    with open_video_writer("out.mp4", fps=30) as writer:
        for frame in frames:            # uint8 (H, W, 3) RGB
            writer.write(frame)

    write_video("out.gif", frames, fps=15)   # the same for any iterable
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from stillmotion.errors import UserInputError
from stillmotion.io.atomic import atomic_path
from stillmotion.progress import progress_iter

VIDEO_EXTENSIONS = (".mp4", ".gif", ".webp")
DEFAULT_CRF = 18


def video_format(path: str | os.PathLike) -> str:
    """``"mp4"``, ``"gif"``, ``"webp"`` or ``"png"`` (a folder) for an output path; else UserInputError."""
    text = os.fspath(path)
    p = Path(text)
    if text.endswith(("/", os.sep)) or p.suffix == "":
        return "png"
    suffix = p.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return suffix[1:]
    raise UserInputError(
        f"output {text}: unsupported extension {p.suffix!r}; use .mp4, .gif, .webp, or a folder "
        "(a path ending with '/' or without an extension) for PNG frames"
    )


# GIF stores each frame's delay in hundredths of a second.
MAX_GIF_FPS = 100.0


def check_fps(fps: object, fmt: str | None = None) -> float:
    """``fps`` as a float when it is a usable frame rate for ``fmt`` ("gif" allows at most 100)."""
    real = isinstance(fps, numbers.Real) and not isinstance(fps, bool)
    if not (real and math.isfinite(fps) and 0 < fps <= 1000):
        raise UserInputError(f"fps must be a number in (0, 1000], got {fps!r}")
    if fmt == "gif" and fps > MAX_GIF_FPS:
        raise UserInputError(
            f"fps {float(fps):g}: a GIF stores frame delays in hundredths of a second, so it plays at most "
            f"{MAX_GIF_FPS:g} frames per second; lower --fps or write .mp4 / .webp"
        )
    return float(fps)


class VideoWriter:
    """Writes uint8 (H, W, 3) RGB frames to one output; use as a context manager.

    The frame size is fixed by ``size`` (W, H) or by the first frame; every frame must match it.
    ``frames_written`` counts the frames so far. Leaving the ``with`` block normally finishes the
    file and moves it into place; leaving it with an exception deletes the temporary output.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fps: float,
        size: tuple[int, int] | None = None,
        crf: int = DEFAULT_CRF,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.format = video_format(path)
        check_fps(fps, self.format)
        if size is not None and not (len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise UserInputError(f"video size must be two positive integers (width, height), got {size!r}")
        if not (0 <= crf <= 51):
            raise UserInputError(f"crf must be in 0..51, got {crf}")
        self.fps = float(fps)
        self.size = tuple(size) if size is not None else None
        self.crf = int(crf)
        self.frames_written = 0
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(
            atomic_path(self.path, directory=self.format == "png", replace_foreign=overwrite)
        )
        self._container = None
        self._stream = None
        self._palette = None
        self._closed = False
        self._finished = False

    # -- public -------------------------------------------------------------------------------
    def write(self, frame: np.ndarray) -> None:
        """Encode one frame (uint8 (H, W, 3) RGB; float or other dtypes are refused)."""
        if self._closed or self._finished:
            raise RuntimeError(f"video writer for {self.path} is closed")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise UserInputError(
                f"frame {self.frames_written} for {self.path}: expected uint8 (H, W, 3) RGB, "
                f"got {frame.dtype} {frame.shape}"
            )
        w, h = frame.shape[1], frame.shape[0]
        if self.size is None:
            self.size = (w, h)
        if (w, h) != self.size:
            raise UserInputError(
                f"frame {self.frames_written} for {self.path} is {w}x{h}, "
                f"the video is {self.size[0]}x{self.size[1]}"
            )
        getattr(self, f"_write_{self.format}")(np.ascontiguousarray(frame))
        self.frames_written += 1

    def finish(self) -> None:
        """Flush the encoder and close the file under its temporary name (an empty video is an
        error); :meth:`close` then only renames it. Lets a caller write its other outputs before any
        of them appears."""
        if self._closed or self._finished:
            return
        try:
            if self.frames_written == 0:
                raise UserInputError(f"no frames were written to {self.path}")
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            if self._container is not None:
                self._container.close()
                self._container = None
        except BaseException as exc:
            self._abort(exc)
            raise
        self._finished = True

    def close(self) -> Path:
        """Finish the file and move it into place (an empty video is an error); return the path."""
        if self._closed:
            return self.path
        self.finish()
        self._closed = True
        self._stack.close()  # atomic rename
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; nothing appears under the final name."""
        self._abort(RuntimeError("aborted"))

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort(exc)

    # -- formats ------------------------------------------------------------------------------
    def _abort(self, exc: BaseException) -> None:
        if self._closed:
            return
        self._closed = True
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        # Re-raising inside the atomic_path context makes it delete the temporary output.
        with contextlib.suppress(BaseException):
            self._stack.__exit__(type(exc), exc, exc.__traceback__)

    def _open_stream(
        self, codec: str, pix_fmt: str, width: int, height: int, container_options: dict, stream_options: dict
    ) -> None:
        self._container = av.open(str(self._tmp), "w", options=container_options)
        rate = Fraction(self.fps).limit_denominator(1001)
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = pix_fmt
        self._stream.options = stream_options

    def _encode(self, frame) -> None:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def _write_mp4(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._stream is None:
            self._open_stream(
                "libx264",
                "yuv420p",
                frame.shape[1],
                frame.shape[0],
                {"movflags": "+faststart"},
                {"crf": str(self.crf), "preset": x264_preset(frame.shape[1], frame.shape[0])},
            )
        self._encode(av.VideoFrame.from_ndarray(frame, format="rgb24"))

    def _write_webp(self, frame: np.ndarray) -> None:
        if self._stream is None:
            self._open_stream(
                "libwebp_anim", "yuv420p", frame.shape[1], frame.shape[0], {"loop": "0"}, {"quality": "90"}
            )
        self._encode(av.VideoFrame.from_ndarray(frame, format="rgb24"))

    def _write_gif(self, frame: np.ndarray) -> None:
        if self._stream is None:
            self._open_stream("gif", "pal8", frame.shape[1], frame.shape[0], {"loop": "0"}, {})
            self._palette = Image.fromarray(frame).quantize(256, method=Image.Quantize.MEDIANCUT)
        indexed = Image.fromarray(frame).quantize(palette=self._palette, dither=Image.Dither.FLOYDSTEINBERG)
        rgb = np.asarray(indexed.getpalette()[: 256 * 3], np.uint8).reshape(-1, 3)
        palette = np.zeros((256, 4), np.uint8)
        # PyAV takes a pal8 palette as 32-bit ARGB entries, laid out here as bytes A, R, G, B.
        palette[:, 0] = 255
        palette[: len(rgb), 1:] = rgb
        self._encode(av.VideoFrame.from_ndarray((np.asarray(indexed), palette), format="pal8"))

    def _write_png(self, frame: np.ndarray) -> None:
        name = self._tmp / f"frame_{self.frames_written:05d}.png"
        if not cv2.imwrite(str(name), frame[..., ::-1]):
            raise OSError(f"could not write {name}")


def x264_preset(width: int, height: int) -> str:
    """The x264 speed preset for a frame size: encoding keeps pace with rendering at large sizes.

    At the same CRF a slower preset only makes the file smaller; at 1920x1080 "veryfast" costs about
    half the CPU of "medium" (``benchmarks/bench_warp.py --hd`` prints both). Below about half a
    megapixel "medium" costs little and keeps files small.
    """
    pixels = width * height
    return "medium" if pixels <= 2**19 else ("faster" if pixels <= 2**20 + 2**19 else "veryfast")


def open_video_writer(
    path: str | os.PathLike,
    *,
    fps: float,
    size: tuple[int, int] | None = None,
    crf: int = DEFAULT_CRF,
    overwrite: bool = False,
) -> VideoWriter:
    """A :class:`VideoWriter` for ``path`` (format by extension; see the module docstring).

    A PNG-frames folder that exists and is not ours is refused unless ``overwrite``
    (:mod:`stillmotion.io.outputs`)."""
    return VideoWriter(path, fps=fps, size=size, crf=crf, overwrite=overwrite)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    progress: bool = False,
    total: int | None = None,
    crf: int = DEFAULT_CRF,
) -> int:
    """Stream every frame of ``frames`` into ``path``; return the number of frames written."""
    if isinstance(frames, np.ndarray | str) or not isinstance(frames, Iterable):
        if not (isinstance(frames, np.ndarray) and frames.ndim == 4):
            raise UserInputError(
                f"frames must be an iterable of uint8 (H, W, 3) frames (or an (N, H, W, 3) array), "
                f"got {type(frames).__name__}"
            )
    with open_video_writer(path, fps=fps, crf=crf) as writer:
        for frame in progress_iter(frames, total=total, desc="encode", enabled=progress, unit="frame"):
            writer.write(frame)
    return writer.frames_written
