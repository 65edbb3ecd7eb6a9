"""``stillmotion demo``: the bundled example end to end, as ``make demo`` runs it."""

from __future__ import annotations

import time
from pathlib import Path

import click
from PIL import Image

from stillmotion import api
from stillmotion.engines.diffusion import DEFAULT_MODEL_DIR
from stillmotion.errors import UserInputError
from stillmotion.io.atomic import atomic_path
from stillmotion.io.outputs import check_writable_location

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


@click.command()
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("out"),
    show_default=True,
    help="Folder the results are written to (created if missing).",
)
@click.option(
    "--frames", type=click.IntRange(min=1), default=125, show_default=True, help="Length of the animations."
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Diffusion sampling steps (default: the bundled model's own).",
)
@click.option(
    "--engine",
    "engines",
    type=click.Choice(["warp", "diffusion"]),
    multiple=True,
    default=("warp", "diffusion"),
    show_default=True,
    help="Engines to run (repeatable). Diffusion needs the bundled model.",
)
def demo(out_dir: Path, frames: int, steps: int | None, engines: tuple[str, ...]) -> None:
    """Animate the bundled waterfall photo with its user-drawn arrows and mask.

    Writes under OUTPUT: motion_field.png (the photo with its arrows beside the dense motion field),
    warp.mp4 (the warp engine, a seamless loop), diffusion_phased.mp4 (the diffusion engine with
    the paper's phased sampler, when the bundled model is present), and a JSON report per video.
    """
    # lazy: numba takes about a second to import (start-up); only this path needs it
    from stillmotion.motion.viz import field_picture

    image = EXAMPLES / "waterfall.jpg"
    arrows = EXAMPLES / "waterfall_arrows.json"
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"-o {out_dir} is an existing file; the demo writes into a folder")
    check_writable_location(out_dir / "motion_field.png", "-o")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    scene, field = api.prepare(image, arrows_file=arrows)
    picture = field_picture(scene.image, field, scene.arrows, scene.mask)
    target = out_dir / "motion_field.png"
    with atomic_path(target) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    click.echo(f"wrote {target}  (photo with {len(scene.arrows)} arrows | dense motion field)")

    def run(engine: str, name: str, **options) -> dict:
        report = api.animate_to_file(
            image,
            out_dir / f"{name}.mp4",
            arrows_file=arrows,
            engine=engine,
            frames=frames,
            report=out_dir / f"{name}.json",
            progress=True,
            **options,
        )
        click.echo(
            f"wrote {out_dir / name}.mp4  ({report['frames']} frames, {report['width']}x{report['height']}, "
            f"{report['seconds_total']:.1f} s)"
        )
        return report

    if "warp" in engines:
        run("warp", "warp")
    if "diffusion" in engines:
        if not (DEFAULT_MODEL_DIR / "model_index.json").is_file():
            click.echo(
                f"skipped the diffusion engine: the bundled model is not present ({DEFAULT_MODEL_DIR})"
            )
        else:
            # Past the model's clip length the engine uses the paper's phased sampler by default.
            run("diffusion", "diffusion_phased", **({} if steps is None else {"steps": steps}))
    click.echo(f"demo finished in {time.perf_counter() - started:.1f} s; results in {out_dir}/")
