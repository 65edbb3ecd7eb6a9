"""``stillmotion eval``: score methods against real videos with the paper's metrics (Tables 1-2)."""

from __future__ import annotations

from pathlib import Path

import click

from stillmotion.errors import UserInputError
from stillmotion.io.outputs import check_outputs

_METHODS = "warp,diffusion,no-refiner,no-motion,no-strength,svd,phased,direct,freenoise,gen-l-video"


def _int_list(value: str, option: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserInputError(f"{option} must be comma-separated integers, got {value!r}") from None
    if not out:
        raise UserInputError(f"{option} is empty")
    return out


@click.command("eval")
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Output folder, replaced atomically; an existing folder only when stillmotion wrote it (or with "
    "--overwrite). It must not hold the input videos.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    default=False,
    help="Replace -o even when it holds files stillmotion did not write.",
)
@click.option("--methods", default=_METHODS, show_default=True,
              help="Comma-separated methods; unavailable ones are reported as skipped.")  # fmt: skip
@click.option(
    "--model", default=None, help="Diffusion model folder (default: the embedded model, when installed)."
)
@click.option(
    "--frames",
    "frames",
    default="16,125",
    show_default=True,
    help="Protocols: frame counts, comma-separated.",
)
@click.option(
    "--condition",
    type=click.Choice(["flow", "arrows"]),
    default="flow",
    show_default=True,
    help="flow: the real video's own flows; arrows: arrows sampled from them, through T.",
)
@click.option("--svd", default=None, help="Stock Stable Video Diffusion folder (adds the `svd` row).")
@click.option(
    "--i3d", default=None, help="I3D Kinetics-400 weights for FVD: i3d_torchscript.pt or a state dict."
)
@click.option(
    "--lpips-dir", default=None, help="Folder with alexnet-owt-*.pth (or alexnet.safetensors) and alex.pth."
)
@click.option("--clip", default=None, help="CLIP vision model folder for Tem-Cons (default: the HF cache).")
@click.option("--limit", type=int, default=None, help="Use only the first N videos.")
@click.option(
    "--steps",
    type=int,
    default=None,
    help="Sampling steps of the diffusion methods (default: the model's, else 25).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed shared by every method.")
@click.option(
    "--size",
    type=int,
    default=None,
    help="Longer side of the working resolution in px (default: the diffusion model's size, else 256).",
)
@click.option(
    "--arrows", "n_arrows", type=int, default=5, show_default=True, help="Arrows sampled per video (arrows)."
)
@click.option("--device", default=None, help="cpu, cuda, ... (default: cuda when available).")
def eval_(videos, out, overwrite, methods, model, frames, condition, svd, i3d, lpips_dir, clip, limit, steps,
          seed, size, n_arrows, device) -> None:  # fmt: skip
    """Score methods against real VIDEOS (files or frame folders; folders are searched) and write a
    markdown table in the paper's layout, CSV/JSON rows, per-frame plots and an HTML page to OUT.

    Each video's first frame is the input image; each method generates every protocol's frame count
    from it and is scored against the real clip. Run under `accelerate launch` to split the videos
    across processes."""
    # Before the (slow) evaluation imports: -o must not be, nor hold, an input video.
    check_outputs([("-o", out, "folder")], [("VIDEO", v) for v in videos], overwrite=overwrite)
    # lazy: numba and torch take seconds to import (start-up); only this path needs them
    from stillmotion.evaluation.runner import EvalOptions, run

    opts = EvalOptions(
        videos=list(videos), out=out, methods=[m.strip() for m in methods.split(",") if m.strip()],
        frames=_int_list(frames, "--frames"), condition=condition, model=model, svd=svd, i3d=i3d,
        lpips_dir=lpips_dir, clip=clip, limit=limit, steps=steps, seed=seed, size=size, arrows=n_arrows,
        device=device, progress=True, overwrite=overwrite,
    )  # fmt: skip
    path = run(opts)
    # lazy: numba and torch take seconds to import (start-up); only this path needs them
    from stillmotion.evaluation.runner import partial_state

    if partial_state().is_main_process:
        click.echo(f"wrote {path}/table.md, results.csv, results.json, plots/, index.html")
        table = (path / "table.md").read_text()
        click.echo(table.split("Frame metrics")[0].rstrip())
