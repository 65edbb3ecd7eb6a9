"""Optical-flow files: Middlebury ``.flo`` (one field) and the project's ``.npz`` (a sequence).

``.flo`` (Baker et al., the format every flow benchmark uses):
Layout, little-endian: float32 magic ``202021.25`` (the bytes spell ``PIEH``), int32 width, int32
height, then ``width * height * 2`` float32 values, row by row, interleaved ``u, v`` (dx, dy).
Ground-truth files mark unknown flow with values above ``UNKNOWN_FLOW_THRESHOLD`` (1e9).

``.npz`` flow sequence (what ``stillmotion flow VIDEO -o OUT.npz`` writes; ``np.load`` reads it,
no pickle): ``flow`` (N-1, H, W, 2) float16 or float32, flow k -> k+1 in pixels of the frames;
``strength`` the global motion strength M_s (eq. 8, see :mod:`stillmotion.motion.strength`);
``fps`` the frame rate of the frames the flow was computed on. :class:`FlowSequenceWriter`
writes it field by field through a temporary file, so memory does not grow with the video.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from stillmotion.errors import UserInputError
from stillmotion.io.atomic import atomic_path

FLO_MAGIC = 202021.25
UNKNOWN_FLOW_THRESHOLD = 1e9
_HEADER_BYTES = 12
# Guards against reading a garbage header as a gigantic allocation.
_MAX_SIDE = 1 << 16


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.flo`` file as float32 (H, W, 2) (dx, dy); raise :class:`UserInputError` if it is bad.

    Unknown-flow markers (> 1e9) are kept as they are; see :func:`valid_flow_mask`.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(
            f"flow file {path} does not exist" if not path.exists() else f"{path} is not a file"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserInputError(f"cannot read flow file {path}: {exc.strerror or exc}") from None
    if len(data) < _HEADER_BYTES:
        raise UserInputError(f"flow file {path} is truncated: {len(data)} bytes, the header alone needs 12")
    magic = float(np.frombuffer(data, "<f4", 1, 0)[0])
    if magic != FLO_MAGIC:
        raise UserInputError(
            f"flow file {path} is not a Middlebury .flo file: magic number {magic!r}, expected {FLO_MAGIC}"
        )
    width, height = (int(v) for v in np.frombuffer(data, "<i4", 2, 4))
    if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        raise UserInputError(f"flow file {path} has an invalid size {width}x{height}")
    expected = _HEADER_BYTES + width * height * 2 * 4
    if len(data) < expected:
        raise UserInputError(
            f"flow file {path} is truncated: {len(data)} bytes, a {width}x{height} field needs {expected}"
        )
    if len(data) > expected:
        raise UserInputError(
            f"flow file {path} has {len(data) - expected} bytes of trailing data after a "
            f"{width}x{height} field"
        )
    flow = np.frombuffer(data, "<f4", width * height * 2, _HEADER_BYTES)
    return flow.reshape(height, width, 2).astype(np.float32)


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> Path:
    """Write (H, W, 2) (dx, dy) flow as a ``.flo`` file, atomically; return the path."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[0] < 1 or flow.shape[1] < 1:
        raise UserInputError(f"a .flo file holds one (H, W, 2) field; got an array of shape {flow.shape}")
    height, width = flow.shape[:2]
    header = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(np.ascontiguousarray(flow, "<f4").tobytes())
    return path


def valid_flow_mask(flow: np.ndarray) -> np.ndarray:
    """True where a ground-truth field holds a known, finite vector (not the > 1e9 marker)."""
    flow = np.asarray(flow)
    return np.isfinite(flow).all(-1) & (np.abs(flow) < UNKNOWN_FLOW_THRESHOLD).all(-1)


class FlowSequenceWriter:
    """Write a flow sequence to ``.npz`` one field at a time; the file appears only on success.

        with FlowSequenceWriter("flows.npz", dtype=np.float16) as out:
            for flow in flows:
                out.append(flow)
            out.extras["strength"] = 0.8

    Fields go to a temporary raw file beside the output; on exit they are copied into the
    archive's ``flow.npy`` behind a header that carries the final count. Extra scalars or small
    arrays in ``extras`` become further keys.
    """

    def __init__(self, path: str | os.PathLike, *, dtype: np.dtype | type = np.float32) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".npz":
            raise UserInputError(f"flow sequence output {self.path} must end in .npz")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float16), np.dtype(np.float32)):
            raise UserInputError(f"flow sequences are stored as float16 or float32, not {self.dtype}")
        self.count = 0
        self.shape: tuple[int, int] | None = None
        self.extras: dict[str, object] = {}

    def __enter__(self) -> FlowSequenceWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = tempfile.TemporaryFile(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=".raw")
        return self

    def append(self, flow: np.ndarray) -> None:
        flow = np.asarray(flow)
        if flow.ndim != 3 or flow.shape[2] != 2:
            raise ValueError(f"a flow field must be (H, W, 2), got {flow.shape}")
        if self.shape is None:
            self.shape = flow.shape[:2]
        elif flow.shape[:2] != self.shape:
            raise ValueError(f"flow field {self.count} is {flow.shape[:2]}, the first was {self.shape}")
        self._raw.write(np.ascontiguousarray(flow, self.dtype.newbyteorder("<")).tobytes())
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self.count == 0:
                    raise UserInputError(
                        f"{self.path}: no flow fields to write (a video needs at least 2 frames)"
                    )
                self._finish()
        finally:
            self._raw.close()

    def _finish(self) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype.newbyteorder("<")),
            "fortran_order": False,
            "shape": (self.count, *self.shape, 2),
        }
        self._raw.seek(0)
        with (
            atomic_path(self.path) as tmp,
            zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf,
        ):
            with zf.open("flow.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array_header_1_0(fh, header)
                shutil.copyfileobj(self._raw, fh, 1 << 22)
            for key, value in self.extras.items():
                with zf.open(f"{key}.npy", "w") as fh:
                    np.lib.format.write_array(fh, np.asarray(value), allow_pickle=False)
