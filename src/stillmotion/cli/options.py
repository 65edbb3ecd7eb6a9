"""Options shared by every command that takes an image with arrows and a mask."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import click

from stillmotion.inputs.scene import Scene, load_scene


def scene_options(func: Callable) -> Callable:
    """Add --arrow (repeatable), --arrows FILE and --mask FILE to a command."""
    func = click.option(
        "--mask",
        type=click.Path(path_type=Path),
        default=None,
        help="Image of the region that may move (white moves, black stays still); any size, "
        "resized to the image.",
    )(func)
    func = click.option(
        "--arrows",
        "arrows_file",
        type=click.Path(path_type=Path),
        default=None,
        help="JSON file of arrows: stillmotion's format (docs/usage.md) or LabelMe (line/linestrip shapes).",
    )(func)
    func = click.option(
        "--arrow",
        "arrow",
        multiple=True,
        metavar="X0,Y0,X1,Y1[,STRENGTH]",
        help="An arrow in image pixels (origin top-left). Content under the tail reaches the head after one "
        "25-frame clip at strength 1. Repeatable.",
    )(func)
    return func


def scene_from_options(
    image: Path, arrow: tuple[str, ...], arrows_file: Path | None, mask: Path | None
) -> Scene:
    return load_scene(image, arrow, arrows_file, mask)


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, without NaN and infinities (FloatRange lets NaN through every bound)."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def finite(
    min: float | None = None, max: float | None = None, *, min_open: bool = False, max_open: bool = False
) -> FiniteFloatRange:
    """A finite float option type with optional bounds, e.g. ``type=finite(0, 1)``."""
    return FiniteFloatRange(min, max, min_open=min_open, max_open=max_open)
