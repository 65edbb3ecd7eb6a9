"""Frames from a video file, a folder of images or a list of image files, streamed.

    src = open_frames("clip.mp4", max_frames=100, stride=2, resize=512)
    print(src.fps, src.size, src.frame_count)      # fps after the stride; size is (W, H)
    for frame in src:                              # RGB uint8 (H, W, 3), one at a time
        ...
    frames = read_frames("frames/")                # (N, H, W, 3) when the whole clip is wanted

Videos (mp4, avi, webm, mov, mkv, gif, ...) are decoded with PyAV frame by frame, so memory does
not grow with the video's length. Folders are read in natural order (``f2.png`` before
``f10.png``). A :class:`FrameSource` can be iterated several times; each pass re-opens the input.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from stillmotion.errors import UserInputError
from stillmotion.io.picture import picture_size, read_rgb

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".webm", ".mov", ".mkv", ".m4v", ".gif", ".mpg", ".mpeg", ".ogv"})
# Frame folders and image lists carry no timing; this is what they are assumed to run at.
DEFAULT_FPS = 25.0


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


@dataclass
class FrameSource:
    """A stream of RGB uint8 frames with what is known about them.

    ``fps`` is the rate of the frames this source yields (the file's rate divided by ``stride``);
    ``size`` is the (width, height) of the yielded frames (after ``resize``); ``frame_count`` is the
    number of frames it will yield when the container says so, else ``None``.
    """

    path: Path | None
    kind: str  # "video", "folder" or "images"
    fps: float
    size: tuple[int, int]
    source_size: tuple[int, int]
    frame_count: int | None
    max_frames: int | None = None
    stride: int = 1
    files: tuple[Path, ...] = ()
    resized: bool = False

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    def __iter__(self) -> Iterator[np.ndarray]:
        raw = self._iter_video() if self.kind == "video" else self._iter_files()
        yielded = 0
        for frame in raw:
            if self.max_frames is not None and yielded >= self.max_frames:
                return
            yield self._fit(frame)
            yielded += 1
        # The container's frame count is exact for mp4 (a rounding frame or so elsewhere): a larger
        # shortfall means the file ends early, e.g. a download cut off mid-stream.
        if self.kind == "video" and self.frame_count is not None and yielded <= self.frame_count - 2:
            warnings.warn(
                f"video {self.path} ended after {yielded} of its {self.frame_count} frames: the file is "
                "truncated or damaged; only the frames that decode are used",
                UserWarning,
                stacklevel=2,
            )

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        w, h = self.size
        if frame.shape[1] == w and frame.shape[0] == h:
            return frame
        shrink = w < frame.shape[1] and h < frame.shape[0]
        return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def _iter_files(self) -> Iterator[np.ndarray]:
        for f in self.files[:: self.stride]:
            frame = _read_image(f)
            if not self.resized and frame.shape[1::-1] != self.source_size:
                raise UserInputError(
                    f"frame {f} is {frame.shape[1]}x{frame.shape[0]} but the first frame is "
                    f"{self.source_size[0]}x{self.source_size[1]}; all frames must have one size "
                    "(or pass resize)"
                )
            yield frame

    def _iter_video(self) -> Iterator[np.ndarray]:
        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise UserInputError(f"cannot read video {self.path}: {exc}") from None
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if index % self.stride == 0:
                    yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            raise UserInputError(f"cannot decode video {self.path}: {exc}") from None
        finally:
            container.close()


def _read_image(path: Path) -> np.ndarray:
    return read_rgb(path, "frame", exif=False)


def _image_size(path: Path) -> tuple[int, int]:
    return picture_size(path, "frame")


def _target_size(source: tuple[int, int], resize: int | tuple[int, int] | None) -> tuple[int, int]:
    if resize is None:
        return source
    if isinstance(resize, int | np.integer):
        if resize < 1:
            raise UserInputError(f"resize must be a positive number of pixels, got {resize}")
        scale = resize / max(source)
        return max(1, round(source[0] * scale)), max(1, round(source[1] * scale))
    w, h = (int(v) for v in resize)
    if w < 1 or h < 1:
        raise UserInputError(f"resize must be a positive (width, height), got {resize}")
    return w, h


def _count(total: int | None, stride: int, max_frames: int | None) -> int | None:
    if total is None:
        return None
    n = math.ceil(total / stride)
    return n if max_frames is None else min(n, max_frames)


def open_frames(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    max_frames: int | None = None,
    stride: int = 1,
    resize: int | tuple[int, int] | None = None,
    fps: float | None = None,
) -> FrameSource:
    """Open a video file, a folder of frames or a list of image files as a :class:`FrameSource`.

    ``stride`` keeps every K-th frame; ``max_frames`` caps the frames yielded (after the stride);
    ``resize`` is an int (the longer side, aspect kept) or (width, height). ``fps`` overrides the
    rate (needed for folders and image lists, which have none; they default to 25).
    Raises :class:`UserInputError` naming the input when it cannot be read.
    """
    if stride < 1:
        raise UserInputError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise UserInputError(f"max_frames must be >= 1, got {max_frames}")
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise UserInputError(f"fps must be a positive number, got {fps}")
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise UserInputError(f"input {path} does not exist")
        if path.is_dir():
            files = sorted((p for p in path.iterdir() if p.is_file() and is_image_file(p)), key=_natural_key)
            if not files:
                raise UserInputError(
                    f"folder {path} holds no image frames ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            return _from_files(path, "folder", files, max_frames, stride, resize, fps)
        if is_image_file(path):
            return _from_files(path, "images", [path], max_frames, stride, resize, fps)
        return _open_video(path, max_frames, stride, resize, fps)
    files = [Path(p) for p in source]
    if not files:
        raise UserInputError("no input frames given")
    for f in files:
        if not f.is_file():
            raise UserInputError(
                f"frame {f} does not exist" if not f.exists() else f"frame {f} is not a file"
            )
    return _from_files(None, "images", files, max_frames, stride, resize, fps)


def _from_files(path, kind, files, max_frames, stride, resize, fps) -> FrameSource:
    source_size = _image_size(files[0])
    return FrameSource(
        path=path,
        kind=kind,
        fps=(fps or DEFAULT_FPS) / stride,
        size=_target_size(source_size, resize),
        source_size=source_size,
        frame_count=_count(len(files), stride, max_frames),
        max_frames=max_frames,
        stride=stride,
        files=tuple(files),
        resized=resize is not None,
    )


def _open_video(path: Path, max_frames, stride, resize, fps) -> FrameSource:
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise UserInputError(f"cannot read video {path}: {exc}") from None
    try:
        if not container.streams.video:
            raise UserInputError(f"{path} has no video stream")
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        file_fps = float(rate) if rate else DEFAULT_FPS
        total = int(stream.frames) if stream.frames else None
        if width < 1 or height < 1:
            # Some containers only know the size once a frame is decoded.
            first = next(container.decode(stream), None)
            if first is None:
                raise UserInputError(f"video {path} holds no frames")
            width, height = first.width, first.height
    except av.error.FFmpegError as exc:
        raise UserInputError(f"cannot read video {path}: {exc}") from None
    finally:
        container.close()
    source_size = (width, height)
    return FrameSource(
        path=path,
        kind="video",
        fps=(fps or file_fps) / stride,
        size=_target_size(source_size, resize),
        source_size=source_size,
        frame_count=_count(total, stride, max_frames),
        max_frames=max_frames,
        stride=stride,
        resized=resize is not None,
    )


def read_frames(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    max_frames: int | None = None,
    *,
    stride: int = 1,
    resize: int | tuple[int, int] | None = None,
) -> np.ndarray:
    """All frames at once as (N, H, W, 3) uint8; use :func:`open_frames` to stream long videos."""
    frames = list(open_frames(source, max_frames=max_frames, stride=stride, resize=resize))
    if not frames:
        raise UserInputError(f"{source} holds no frames")
    return np.stack(frames)
