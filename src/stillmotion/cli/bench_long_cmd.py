"""``stillmotion bench-long``: the command around :mod:`stillmotion.evaluation.long_bench`."""

from __future__ import annotations

from pathlib import Path

import click

from stillmotion.cli.options import scene_from_options, scene_options
from stillmotion.errors import UserInputError
from stillmotion.evaluation.long_bench import DEFAULT_METHODS, TINY_RANDOM, run_bench_long
from stillmotion.io.atomic import atomic_path


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserInputError(f"--size must look like WxH (e.g. 64x32), got {text!r}") from None
    if w < 1 or h < 1:
        raise UserInputError(f"--size must be positive, got {text!r}")
    return w, h


@click.command(
    "bench-long",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Example:\n\n\b\n"
    "  stillmotion bench-long photo.jpg --arrows arrows.json --mask mask.png --frames 125 \\\n"
    "      --model tiny-random -o out/bench-long\n",
)
@click.argument("image", type=click.Path(path_type=Path))
@scene_options
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--frames", type=click.IntRange(min=1), default=125, show_default=True, help="Video length.")
@click.option(
    "--methods", default=DEFAULT_METHODS, show_default=True, help="Comma-separated methods to compare."
)
@click.option(
    "--model",
    default=None,
    help=f"StillMotion/SVD folder or hub id (default: the bundled model). '{TINY_RANDOM}': the tiny backbone "
    "with random weights (untrained; for cost and memory comparisons only).",
)
@click.option("--steps", type=click.IntRange(min=1), default=25, show_default=True, help="Denoising steps.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed shared by all methods.")
@click.option("--size", "size_text", metavar="WxH", default=None, help="Frame size (default: the model's).")
@click.option("--gamma", type=click.FloatRange(0, 1), default=0.8, show_default=True, help="phased: gamma.")
@click.option("--omega", type=click.FloatRange(min=0), default=0.2, show_default=True, help="phased: omega.")
@click.option("--overlap", type=click.IntRange(min=0), default=None,
              help="phased: frames shared per join, cross-faded (default: the engine's, 1; 5 warp-guided "
              "or with the own carry).")
@click.option("--branch-sigma", type=click.FloatRange(min=0, min_open=True), default=None,
              help="phased: branch at this noise level instead of at gamma's step.")
@click.option("--carry", default="motion",
              type=click.Choice(["motion", "reference", "appearance", "own", "copy"]),
              show_default=True, help="phased: later segments continue as fits the model (motion: "
              "reference under warp-guided control, appearance with trained motion input, else own), along "
              "the motion reference (reference), the reference with segment 1's mean difference from it, "
              "moved along (appearance), the model's own motion (own), or copy segment 1 (the paper's).")
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="freenoise / gen-l-video: window stride (default L // 4).")
@click.option("--chunk-frames", type=click.IntRange(min=1), default=None,
              help="freenoise: run the per-frame layers on at most this many frames at a time.")
@click.option(
    "--clip-frames",
    type=click.IntRange(min=2),
    default=25,
    show_default=True,
    help=f"Base clip length of the {TINY_RANDOM} backbone (a real model brings its own).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=8.0, show_default=True)
def bench_long(
    image: Path,
    arrow: tuple[str, ...],
    arrows_file: Path | None,
    mask: Path | None,
    output: Path,
    frames: int,
    methods: str,
    model: str | None,
    steps: int,
    seed: int,
    size_text: str | None,
    gamma: float,
    omega: float,
    overlap: int | None,
    branch_sigma: float | None,
    carry: str,
    stride: int | None,
    chunk_frames: int | None,
    clip_frames: int,
    device: str,
    fps: float,
) -> None:
    """Compare the long-video methods (phased, direct, freenoise, gen-l-video) on IMAGE: videos, a Table-2
    style table (markdown + CSV), a consistency plot and report.json in the output folder."""
    # lazy: numba takes about a second to import (start-up); only this path needs it
    from stillmotion.motion.dense import dense_flow_from_arrows

    scene = scene_from_options(image, arrow, arrows_file, mask)
    motion = None
    if scene.arrows:
        motion = dense_flow_from_arrows(scene.arrows, scene.width, scene.height, mask=scene.mask)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    if not names:
        raise UserInputError("--methods is empty")
    with atomic_path(output, directory=True) as tmp:
        rows, label = run_bench_long(
            scene, motion, out_dir=tmp, frames=frames, methods=names, model=model, steps=steps, seed=seed,
            size=parse_size(size_text), gamma=gamma, omega=omega, overlap=overlap, clip_frames=clip_frames,
            device=device, fps=fps, progress=True, branch_sigma=branch_sigma, carry=carry, stride=stride,
            chunk_frames=chunk_frames,
        )  # fmt: skip
        table = (tmp / "table.md").read_text()
    click.echo(table)
    click.echo(f"written to {output}/ (videos, table.md, table.csv, consistency.png, strip.png, report.json)")
