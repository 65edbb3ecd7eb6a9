"""``stillmotion motion``: arrows (and a mask) on an image -> a picture of the dense motion field."""

from __future__ import annotations

import math
from pathlib import Path

import click
import numpy as np
from PIL import Image

from stillmotion.api import check_work_size, parse_size, resize_scene
from stillmotion.cli.options import scene_from_options, scene_options
from stillmotion.errors import MAX_STRENGTH, UserInputError
from stillmotion.inputs.arrows import Arrow, referenced_files
from stillmotion.io.atomic import atomic_path
from stillmotion.io.flo import write_flo
from stillmotion.io.motion_file import check_speed
from stillmotion.io.outputs import check_outputs
from stillmotion.io.picture import picture_size

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@click.command(
    "motion",
    epilog="Example: stillmotion motion photo.jpg --arrow 100,200,160,210 --mask mask.png -o field.png "
    "--flo field.flo",
)
@click.argument("image", type=click.Path(path_type=Path))
@scene_options
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Picture to write (.png/.jpg/.webp): the image with arrows and mask outline beside the "
    "field in the standard optical-flow colour wheel (hue = direction, saturation = speed).",
)
@click.option(
    "--flo",
    "flo_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the dense per-frame field (dx, dy in pixels per frame) as Middlebury .flo.",
)
@click.option(
    "--sigma",
    type=float,
    default=None,
    help="Gaussian width in pixels (eq. 6). Default: 170 px at 512 px, proportional to the image's "
    "longer side.",
)
@click.option(
    "--threshold",
    type=float,
    default=0.05,
    show_default=True,
    help="R of eq. 7: the field is zeroed where its speed is below R times the fastest arrow's speed.",
)
@click.option(
    "--strength",
    type=float,
    default=1.0,
    show_default=True,
    help="Global speed factor multiplying every arrow (on top of each arrow's own strength).",
)
@click.option(
    "--size",
    "size_text",
    metavar="WxH",
    default=None,
    help="Resize the image (and mask, arrows with it) to W x H pixels first; needed for photos above 40 MP.",
)
@click.option(
    "--layout",
    type=click.Choice(["side", "overlay"]),
    default="side",
    show_default=True,
    help="side: image and colour-coded field next to each other; overlay: field blended over the image.",
)
def motion(
    image: Path,
    arrow: tuple[str, ...],
    arrows_file: Path | None,
    mask: Path | None,
    output: Path,
    flo_path: Path | None,
    sigma: float | None,
    threshold: float,
    strength: float,
    size_text: str | None,
    layout: str,
) -> None:
    """Turn arrows drawn on IMAGE (and an optional mask) into a dense motion field (paper eqs. 5-7).

    Writes a picture of the field and, with --flo, the field itself. Nothing is written when an
    input is wrong (an arrow outside the image, zero length, a bad file...).
    """
    # lazy: numba takes about a second to import (start-up); only this path needs it
    from stillmotion.motion.dense import dense_flow_from_arrows
    from stillmotion.motion.viz import field_picture

    if output.suffix.lower() not in PICTURE_SUFFIXES:
        raise UserInputError(f"-o {output}: the picture must end in one of {', '.join(PICTURE_SUFFIXES)}")
    if flo_path is not None and flo_path.suffix.lower() != ".flo":
        raise UserInputError(f"--flo {flo_path}: the file name must end in .flo")
    if not (math.isfinite(strength) and 0 <= strength <= MAX_STRENGTH):
        raise UserInputError(f"--strength must be a number from 0 to {MAX_STRENGTH:g}, got {strength}")
    if sigma is not None and not (math.isfinite(sigma) and sigma > 0):
        raise UserInputError(f"--sigma must be a positive number, got {sigma}")
    if not (0 <= threshold < 1):  # also refuses NaN
        raise UserInputError(f"--threshold must be in [0, 1), got {threshold}")
    size = parse_size(size_text) if size_text is not None else None
    check_outputs(
        [("-o", output, "file"), ("--flo", flo_path, "file")],
        [("IMAGE", image), ("--arrows", arrows_file), ("--mask", mask), *referenced_files(arrows_file)],
    )
    if size is None:
        check_work_size(*picture_size(image, "image"), what="stillmotion motion")  # before decoding
    scene = scene_from_options(image, arrow, arrows_file, mask)
    if not scene.arrows:
        raise UserInputError("no arrows given: draw at least one with --arrow X0,Y0,X1,Y1 or --arrows FILE")
    if size is not None:
        check_work_size(*size, what="stillmotion motion")
        scene = resize_scene(scene, size)
    check_work_size(scene.width, scene.height, what="stillmotion motion")
    for a in scene.arrows:
        if a.strength * strength > MAX_STRENGTH:
            raise UserInputError(
                f"{a.label()}: strength {a.strength:g} x --strength {strength:g} passes the limit "
                f"{MAX_STRENGTH:g}"
            )
    arrows = [Arrow(a.points, a.strength * strength, a.name) for a in scene.arrows]
    field = dense_flow_from_arrows(
        arrows, scene.width, scene.height, sigma=sigma, threshold=threshold, mask=scene.mask
    )
    check_speed(field, "the motion field")
    picture = field_picture(scene.image, field, scene.arrows, scene.mask, layout=layout)
    # Nested so that a failure writing either file leaves neither behind.
    with atomic_path(output) as tmp:
        Image.fromarray(picture).save(tmp)
        if flo_path is not None:
            write_flo(flo_path, field)
    speed = np.hypot(field[..., 0], field[..., 1])
    click.echo(
        f"{len(scene.arrows)} arrow(s), {scene.width}x{scene.height}: max speed {speed.max():.2f} px/frame, "
        f"{(speed > 0).mean() * 100:.1f}% of pixels move -> {output}" + (f", {flo_path}" if flo_path else ""),
        err=True,
    )
