"""``stillmotion prepare VIDEOS -o CACHE``: videos -> training clips with flow, strength, camera flag."""

from __future__ import annotations

from pathlib import Path

import click

from stillmotion.errors import UserInputError
from stillmotion.io.outputs import check_writable_location
from stillmotion.training.camera import STATIC_THRESHOLD


def _parse_size(value: str) -> tuple[int, int]:
    try:
        if "x" in value.lower():
            w, h = (int(v) for v in value.lower().split("x"))
        else:
            w = h = int(value)
    except ValueError:
        raise UserInputError(f"--size must be N or WxH (pixels), got {value!r}") from None
    return w, h


@click.command()
@click.argument("videos", required=False, type=click.Path(path_type=str))
@click.option("-o", "--output", "cache", required=True, type=click.Path(path_type=str),
              help="Cache folder (created; re-running adds new videos and skips finished ones).")
@click.option("--frames", default=25, show_default=True, help="Frames per clip.")
@click.option("--size", default="512", show_default=True,
              help="Clip size: N (square) or WxH; cover-resize + centre crop.")
@click.option("--stride", type=int, default=None,
              help="Frames between clip starts (default: --frames, no overlap).")
@click.option("--frame-step", default=1, show_default=True, help="Keep every k-th source frame.")
@click.option("--vae", type=click.Path(path_type=str), default=None,
              help="VAE folder (or a pipeline folder with vae/): also store latents.")
@click.option("--flow-method", type=click.Choice(["dis", "farneback", "raft"]), default="dis",
              show_default=True)
@click.option("--flow-weights", type=click.Path(path_type=str), default=None, help="RAFT weights file.")
@click.option("--max-clips-per-video", type=int, default=None, help="Stop each video after this many clips.")
@click.option("--static-threshold", type=float, default=None,
              help="Camera drift (px/frame at 512 px) below which a clip counts as static-camera [0.2].")
@click.option("--shard-mb", default=256.0, show_default=True, help="Largest shard size.")
@click.option("--synthetic", "photos", type=str, default=None,
              help="Instead of videos: animate photos from this folder ('skimage': scikit-image's photos) "
                   "along random arrow fields with the warp engine.")
@click.option("--clips-per-photo", default=4, show_default=True, help="With --synthetic: clips per photo.")
@click.option("--seed", default=0, show_default=True, help="With --synthetic: random seed.")
@click.option("--speed", default="0.5,4", show_default=True, metavar="MIN,MAX",
              help="With --synthetic: per-frame arrow speeds in px at a 512-px frame (scaled to --size).")
def prepare(videos, cache, frames, size, stride, frame_step, vae, flow_method, flow_weights,
            max_clips_per_video, static_threshold, shard_mb, photos, clips_per_photo, seed, speed) -> None:
    """Cut the videos under VIDEOS (mp4, avi, webm, gif, ..., frame folders) into training clips.

    Each clip stores its frames (uint8), per-frame optical flow (float16), motion strength (eq. 8),
    a static-camera flag and, with --vae, latents, in safetensors shards with an index.json.
    Unreadable videos are listed and skipped.

    \b
    Examples:
      stillmotion prepare ~/videos -o cache/ --frames 25 --size 512
      stillmotion prepare --synthetic skimage -o cache/ --frames 16 --size 128
    """
    # lazy: numba takes about a second to import (start-up); only this path needs it
    from stillmotion.training.prepare import PrepareSettings, prepare_synthetic, prepare_videos

    target = Path(cache)
    if target.exists() and not target.is_dir():
        raise UserInputError(f"-o {cache} is an existing file; the clip cache is a folder")
    check_writable_location(target / "index.json", "-o")
    settings = PrepareSettings(
        frames=frames, size=_parse_size(size), stride=stride, frame_step=frame_step, flow_method=flow_method,
        flow_weights=flow_weights, vae=vae, shard_mb=shard_mb, max_clips_per_video=max_clips_per_video,
        static_threshold=STATIC_THRESHOLD if static_threshold is None else static_threshold,
    )
    if photos is not None:
        if videos is not None:
            raise UserInputError("give either VIDEOS or --synthetic PHOTOS, not both (run prepare twice)")
        try:
            lo, hi = (float(v) for v in speed.split(","))
        except ValueError:
            raise UserInputError(f"--speed must be MIN,MAX (two numbers), got {speed!r}") from None
        report = prepare_synthetic(photos, cache, settings, clips_per_photo=clips_per_photo, seed=seed,
                                   speed=(lo, hi), progress=True)
    else:
        if videos is None:
            raise UserInputError("missing VIDEOS folder (or --synthetic PHOTOS)")
        report = prepare_videos(videos, cache, settings, progress=True)
    click.echo(report.summary())
