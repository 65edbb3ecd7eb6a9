"""Arrows and trajectories as users draw them, and the files that carry them.

Meaning of an arrow (documented in docs/usage.md): the content under the arrow's tail reaches its
head after one base clip of ``BASE_CLIP_FRAMES`` frames at strength 1.0, so the per-frame speed is
``length / (BASE_CLIP_FRAMES - 1)`` pixels; longer videos keep that speed. A trajectory with more
points is a path followed at constant speed: its whole length is covered in one base clip.

Project JSON schema (``version`` 1)::

    {
      "version": 1,
      "image_size": [W, H],          # optional: size the coordinates refer to (scaled to the image)
      "mask": "mask.png",            # optional: path relative to the JSON file
      "arrows": [
        {"points": [[x0, y0], [x1, y1], ...],   # >= 2 points, pixels, origin top-left
         "strength": 1.0,                       # optional per-arrow speed factor (M_o in eq. 5)
         "name": "river"}                       # optional
      ]
    }

``{"start": [x, y], "end": [x, y]}`` is accepted in place of ``points``. LabelMe files (``shapes``
with ``shape_type`` ``line`` or ``linestrip``) are read too; their polygons, when no mask is given,
form the mask (LabelMe users outline the moving region that way).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stillmotion.errors import MAX_STRENGTH, UserInputError
from stillmotion.io.atomic import atomic_path

BASE_CLIP_FRAMES = 25


@dataclass(frozen=True)
class Arrow:
    """A user-drawn arrow or trajectory in image pixels (x right, y down, origin top-left)."""

    points: tuple[tuple[float, float], ...]
    strength: float = 1.0
    name: str = ""

    @property
    def start(self) -> tuple[float, float]:
        return self.points[0]

    @property
    def end(self) -> tuple[float, float]:
        return self.points[-1]

    @property
    def length(self) -> float:
        return sum(math.dist(a, b) for a, b in zip(self.points[:-1], self.points[1:], strict=True))

    def label(self) -> str:
        return f"arrow {self.name!r}" if self.name else "arrow"

    def validate(self, width: int | None = None, height: int | None = None) -> Arrow:
        """Raise :class:`UserInputError` naming the arrow when it cannot be used; return self."""
        who = self.label()
        _check_fields(self, who)
        if len(self.points) < 2:
            raise UserInputError(
                f"{who} has a single point {self.points[0] if self.points else ()}: "
                "draw at least a start and an end"
            )
        for x, y in self.points:
            if not (math.isfinite(x) and math.isfinite(y)):
                raise UserInputError(f"{who} has a non-finite coordinate ({x}, {y})")
        if not (math.isfinite(self.strength) and 0 <= self.strength <= MAX_STRENGTH):
            raise UserInputError(
                f"{who} has strength {self.strength:g}: it must be a number from 0 to {MAX_STRENGTH:g}"
            )
        if self.length == 0:
            raise UserInputError(f"{who} has zero length: start and end are both at {self.points[0]}")
        if width is not None and height is not None:
            for x, y in self.points:
                if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
                    raise UserInputError(
                        f"{who} point ({x:g}, {y:g}) lies outside the image ({width}x{height}; "
                        f"x must be in 0..{width - 1}, y in 0..{height - 1})"
                    )
        return self

    def scaled(self, sx: float, sy: float) -> Arrow:
        return Arrow(tuple((x * sx, y * sy) for x, y in self.points), self.strength, self.name)

    def to_json(self) -> dict:
        out: dict = {
            "points": [[float(x), float(y)] for x, y in self.points],
            "strength": float(self.strength),
        }
        if self.name:
            out["name"] = self.name
        return out


def _real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_fields(arrow: Arrow, who: str) -> None:
    """Arrow objects built by hand (Python API) may hold anything: check the types first."""
    pts = arrow.points
    if not (
        isinstance(pts, Sequence)
        and not isinstance(pts, str)
        and all(isinstance(p, Sequence) and len(p) == 2 and all(_real(v) for v in p) for p in pts)
    ):
        raise UserInputError(f"{who}: points must be a sequence of (x, y) number pairs, got {pts!r:.80}")
    if not _real(arrow.strength):
        raise UserInputError(f"{who}: strength must be a number, got {arrow.strength!r}")
    if not isinstance(arrow.name, str):
        raise UserInputError(f"{who}: name must be a string, got {arrow.name!r}")


def arrow_from_any(value: object, index: int = 0) -> Arrow:
    """An :class:`Arrow` from an Arrow, an ``"X0,Y0,X1,Y1[,S]"`` string or a sequence of 4 or 5 numbers."""
    if isinstance(value, Arrow):
        return value
    if isinstance(value, str):
        return parse_arrow_option(value, index)
    who = f"arrows[{index}]"
    if isinstance(value, Sequence | np.ndarray) and len(value) in (4, 5) and all(_real(v) for v in value):
        x0, y0, x1, y1 = (float(v) for v in value[:4])
        strength = float(value[4]) if len(value) == 5 else 1.0
        return Arrow(((x0, y0), (x1, y1)), strength, name=f"#{index + 1}").validate()
    raise UserInputError(
        f"{who} = {value!r:.80}: expected an Arrow, an 'X0,Y0,X1,Y1[,STRENGTH]' string or "
        "(x0, y0, x1, y1[, strength]) numbers"
    )


def parse_arrow_option(text: str, index: int = 0) -> Arrow:
    """Parse ``X0,Y0,X1,Y1[,STRENGTH]`` from the command line."""
    who = f"--arrow #{index + 1} {text!r}"
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (4, 5):
        raise UserInputError(
            f"{who}: expected X0,Y0,X1,Y1[,STRENGTH] (4 or 5 numbers), got {len(parts)} values"
        )
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UserInputError(f"{who}: every value must be a number") from None
    x0, y0, x1, y1 = values[:4]
    strength = values[4] if len(values) == 5 else 1.0
    return Arrow(((x0, y0), (x1, y1)), strength, name=f"#{index + 1}").validate()


@dataclass
class ArrowsFile:
    arrows: list[Arrow]
    mask_path: Path | None = None
    image_size: tuple[int, int] | None = None  # (W, H) the coordinates refer to
    mask_polygons: list[list[tuple[float, float]]] = field(default_factory=list)

    def arrows_for_image(self, width: int, height: int) -> list[Arrow]:
        """The arrows in the pixel frame of an image of ``width`` x ``height``, validated."""
        arrows = self.arrows
        if self.image_size and tuple(self.image_size) != (width, height):
            sx, sy = width / self.image_size[0], height / self.image_size[1]
            arrows = [a.scaled(sx, sy) for a in arrows]
        return [a.validate(width, height) for a in arrows]


def load_arrows_file(path: str | os.PathLike) -> ArrowsFile:
    """Read the project's JSON or a LabelMe JSON file (detected by its keys)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(
            f"cannot read arrows file {path}: "
            + ("it does not exist" if not path.exists() else "it is not a file")
        )
    try:
        size = path.stat().st_size
        if size > MAX_ARROWS_FILE_BYTES:
            raise UserInputError(
                f"arrows file {path} is {size / 2**20:.0f} MB; an arrows file is at most "
                f"{MAX_ARROWS_FILE_BYTES // 2**20} MB"
            )
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise UserInputError(f"cannot read arrows file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserInputError(f"arrows file {path} is not a text (UTF-8) JSON file") from None
    doc = parse_json(text, f"arrows file {path}")
    if not isinstance(doc, dict):
        raise UserInputError(f"arrows file {path}: expected a JSON object at the top level")
    if "shapes" in doc:
        return _read_labelme(doc, path)
    if "arrows" in doc:
        return _read_project(doc, path)
    raise UserInputError(
        f"arrows file {path}: neither a stillmotion file (no 'arrows' key) nor LabelMe (no 'shapes')"
    )


MAX_ARROWS_FILE_BYTES = 50 * 2**20
_MAX_DIGITS = 30


class _BadNumber(ValueError):
    pass


def _no_constant(name: str):
    raise _BadNumber(f"{name} is a non-finite number, which JSON does not allow")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_DIGITS:
        raise _BadNumber(f"a number with {len(text.lstrip('-'))} digits is too long (at most {_MAX_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    if len(text) > 100:
        raise _BadNumber(f"a number written with {len(text)} characters is too long")
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"{text} is too large for a number")
    return value


def parse_json(text: str, where: str):
    """``json.loads`` for user files: NaN/Infinity, overlong or overflowing numbers and deep
    nesting are one :class:`UserInputError` naming ``where``."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_int=_int, parse_float=_float)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except _BadNumber as exc:
        raise UserInputError(f"{where}: {exc}") from None
    except RecursionError:
        raise UserInputError(f"{where}: the JSON is nested too deeply") from None
    except ValueError as exc:  # e.g. Python's limit on integer digits
        raise UserInputError(f"{where} is not valid JSON: {exc}") from None


def _points(raw, where: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(raw, list) or not all(isinstance(p, list | tuple) and len(p) == 2 for p in raw):
        raise UserInputError(f"{where}: 'points' must be a list of [x, y] pairs")
    if not all(_real(v) for p in raw for v in p):
        raise UserInputError(f"{where}: every coordinate must be a number")
    return tuple((float(x), float(y)) for x, y in raw)


def _read_project(doc: dict, path: Path) -> ArrowsFile:
    if doc.get("version", 1) != 1:
        raise UserInputError(f"arrows file {path}: unsupported version {doc.get('version')!r} (this reads 1)")
    raw_arrows = doc["arrows"]
    if not isinstance(raw_arrows, list):
        raise UserInputError(f"arrows file {path}: 'arrows' must be a list")
    arrows = []
    for i, item in enumerate(raw_arrows):
        where = f"arrows file {path}, arrow #{i + 1}"
        if not isinstance(item, dict):
            raise UserInputError(f"{where}: expected an object with 'points'")
        if "points" in item:
            pts = _points(item["points"], where)
        elif "start" in item and "end" in item:
            pts = _points([item["start"], item["end"]], where)
        else:
            raise UserInputError(f"{where}: needs 'points' (or 'start' and 'end')")
        strength = item.get("strength", 1.0)
        if not _real(strength):
            raise UserInputError(f"{where}: 'strength' must be a number")
        strength = float(strength)
        name = str(item.get("name") or f"#{i + 1}")
        arrows.append(Arrow(pts, strength, name).validate())
    size = doc.get("image_size")
    if size is not None:
        if not (isinstance(size, list) and len(size) == 2):
            raise UserInputError(
                f"arrows file {path}: 'image_size' must be [width, height], got {size!r:.80}"
            )
        size = _image_size(size[0], size[1], f"arrows file {path}: 'image_size'")
    mask = doc.get("mask")
    if mask is not None and not isinstance(mask, str):
        raise UserInputError(f"arrows file {path}: 'mask' must be a file path (a string)")
    mask_path = (path.parent / mask) if mask else None
    return ArrowsFile(arrows, mask_path, size)


def _read_labelme(doc: dict, path: Path) -> ArrowsFile:
    arrows, polygons = [], []
    shapes = doc.get("shapes") or []
    if not isinstance(shapes, list):
        raise UserInputError(f"LabelMe file {path}: 'shapes' must be a list")
    for i, shape in enumerate(shapes):
        if not isinstance(shape, dict):
            raise UserInputError(f"LabelMe file {path}: shape #{i + 1} must be an object")
        kind = shape.get("shape_type")
        label = str(shape.get("label") or f"shape{i + 1}")
        where = f"LabelMe file {path}, shape {label!r}"
        if kind in ("line", "linestrip"):
            arrows.append(Arrow(_points(shape.get("points"), where), 1.0, label).validate())
        elif kind == "polygon":
            polygons.append(list(_points(shape.get("points"), where)))
    size = None
    if doc.get("imageWidth") and doc.get("imageHeight"):
        where = f"LabelMe file {path}: imageWidth and imageHeight"
        size = _image_size(doc["imageWidth"], doc["imageHeight"], where)
    return ArrowsFile(arrows, None, size, polygons)


def referenced_files(arrows_file: str | os.PathLike | None) -> list[tuple[str, Path]]:
    """Files an arrows file points to (its mask), as (label, path): inputs no output may replace."""
    if not isinstance(arrows_file, str | os.PathLike):
        return []
    doc = load_arrows_file(arrows_file)
    return [(f"mask of --arrows {os.fspath(arrows_file)}", doc.mask_path)] if doc.mask_path else []


def _image_size(w: object, h: object, where: str) -> tuple[int, int]:
    """(W, H) the coordinates refer to: whole pixels from 1 to 2^20 (a zero size would divide by zero)."""
    if not all(_real(v) and math.isfinite(v) and 1 <= v <= 1 << 20 and float(v).is_integer() for v in (w, h)):
        raise UserInputError(
            f"{where} must be two whole numbers of pixels from 1 to {1 << 20}, got [{w!r}, {h!r}]"
        )
    return int(w), int(h)


def save_arrows_json(
    path: str | os.PathLike,
    arrows: list[Arrow],
    image_size: tuple[int, int] | None = None,
    mask: str | None = None,
) -> None:
    """Write the project's JSON (atomically)."""
    doc: dict = {"version": 1}
    if image_size:
        doc["image_size"] = [int(image_size[0]), int(image_size[1])]
    if mask:
        doc["mask"] = mask
    doc["arrows"] = [a.to_json() for a in arrows]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
