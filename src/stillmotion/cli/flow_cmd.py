"""``stillmotion flow``: optical flow of two frames (.flo) or of a whole video (.npz + motion strength)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click
import cv2
import numpy as np
from PIL import Image

from stillmotion.cli.options import finite
from stillmotion.errors import UserInputError
from stillmotion.inputs.image import load_image
from stillmotion.io.atomic import AtomicGroup
from stillmotion.io.flo import FlowSequenceWriter, write_flo
from stillmotion.io.outputs import check_outputs
from stillmotion.io.video_reader import is_image_file, open_frames
from stillmotion.io.video_writer import video_format
from stillmotion.progress import progress_iter


@click.command(
    "flow",
    epilog="Examples: stillmotion flow frame10.png frame11.png -o flow10.flo; "
    "stillmotion flow clip.mp4 -o flows.npz --viz flows.mp4 --max-frames 100",
)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="INPUT...")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Two frames: a Middlebury .flo of frame 1 -> frame 2 at full resolution. A video, frame folder "
    "or 3+ images: an .npz with 'flow' (N-1, H, W, 2), 'strength' (M_s, eq. 8) and 'fps'.",
)
@click.option(
    "--method",
    type=click.Choice(["dis", "farneback", "raft"]),
    default="dis",
    show_default=True,
    help="dis: OpenCV DIS tuned for accuracy (no weights); farneback: OpenCV Farneback (no weights); "
    "raft: RAFT with torchvision weights from --weights.",
)
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="RAFT weights (--method raft): torchvision raft_small or raft_large state dict, .pth or "
    ".safetensors; the variant is read from the file.",
)
@click.option(
    "--viz",
    "viz_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also render the flow: for a video an .mp4 (or .gif/.webp) of each frame beside its "
    "colour-coded flow; for two frames a picture (.png/.jpg).",
)
@click.option(
    "--max-frames",
    type=click.IntRange(min=2),
    default=None,
    help="Read at most N frames (after --stride) of a video or folder.",
)
@click.option(
    "--stride",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Use every K-th frame of a video or folder (the flow is then between frames K apart).",
)
@click.option(
    "--resize",
    type=click.IntRange(min=8),
    default=None,
    help="Scale frames so their longer side is N pixels before computing flow (default: full size).",
)
@click.option(
    "--dtype",
    type=click.Choice(["float16", "float32"]),
    default="float16",
    show_default=True,
    help="Storage type of the .npz flow (float16 halves the file; rounding stays below 0.02 px "
    "up to 64 px/frame).",
)
@click.option(
    "--device", default=None, help="Device for RAFT, e.g. cpu or cuda (default: cuda when available)."
)
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=12,
    show_default=True,
    help="RAFT's number of recurrent flow updates.",
)
@click.option(
    "--fps",
    type=finite(0, 1000, min_open=True),
    default=None,
    help="Frame rate to record for a frame folder or image list (they carry none; default 25).",
)
def flow(
    inputs: tuple[Path, ...],
    output: Path,
    method: str,
    weights: Path | None,
    viz_path: Path | None,
    max_frames: int | None,
    stride: int,
    resize: int | None,
    dtype: str,
    device: str | None,
    iterations: int,
    fps: float | None,
) -> None:
    """Compute optical flow of INPUT: two image files, a video file, a folder of frames or 3+ images.

    Flow is (dx, dy) in pixels from each frame to the next, at the frames' resolution (see --resize).
    Long videos are streamed: memory does not grow with their length. Nothing is written on error.
    """
    if weights is not None and method != "raft":
        raise UserInputError(f"--weights is only used with --method raft (got --method {method})")
    if method == "raft" and weights is None:
        raise UserInputError("--method raft needs --weights FILE (torchvision raft_small/raft_large weights)")

    pair = len(inputs) == 2 and all(is_image_file(p) for p in inputs)
    viz_kind = "file"
    if viz_path is not None and not pair:
        viz_kind = "folder" if video_format(viz_path) == "png" else "file"
    check_outputs(
        [("-o", output, "file"), ("--viz", viz_path, viz_kind)],
        [("INPUT", p) for p in inputs] + [("--weights", weights)],
    )
    if pair:
        _flow_pair(inputs, output, method, weights, viz_path, resize, device, iterations)
        return
    if len(inputs) == 2:
        raise UserInputError(
            f"two inputs must both be image files (got {inputs[0]} and {inputs[1]}); pass a "
            "video or a folder alone"
        )
    if len(inputs) > 2 and not all(is_image_file(p) for p in inputs):
        bad = next(p for p in inputs if not is_image_file(p))
        raise UserInputError(f"{bad}: several inputs must all be image files (frames in order)")
    source = inputs[0] if len(inputs) == 1 else list(inputs)
    _flow_video(
        source, output, method, weights, viz_path, max_frames, stride, resize, dtype, device, iterations, fps
    )


def _estimator(method: str, weights: Path | None, device: str | None, iterations: int):
    # lazy: numba takes about a second to import (start-up); only this path needs it
    from stillmotion.motion.flow import FlowEstimator

    return FlowEstimator(method, weights=weights, device=device, iterations=iterations)


def _flow_pair(inputs, output, method, weights, viz_path, resize, device, iterations) -> None:
    # lazy: numba takes about a second to import (start-up); only this path needs it
    from stillmotion.motion.viz import flow_video_frame

    if output.suffix.lower() != ".flo":
        raise UserInputError(f"-o {output}: the flow of two frames is written as .flo")
    if viz_path is not None and viz_path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise UserInputError(f"--viz {viz_path}: for two frames the picture must be .png, .jpg or .webp")
    a, b = (load_image(p) for p in inputs)
    if a.shape != b.shape:
        raise UserInputError(
            f"{inputs[0]} is {a.shape[1]}x{a.shape[0]} but {inputs[1]} is "
            f"{b.shape[1]}x{b.shape[0]}; both frames must have one size"
        )
    if resize is not None:
        k = resize / max(a.shape[:2])
        size = (max(1, round(a.shape[1] * k)), max(1, round(a.shape[0] * k)))
        a, b = (
            cv2.resize(x, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR) for x in (a, b)
        )
    _check_flow_size(a.shape[1], a.shape[0], resize)
    field = _estimator(method, weights, device, iterations)(a, b)
    # Both files are written under temporary names, then renamed together.
    with AtomicGroup() as group:
        write_flo(group.path(output), field)
        if viz_path is not None:
            Image.fromarray(flow_video_frame(a, field)).save(group.path(viz_path))
    _report(field[None], output, viz_path)


def _flow_video(
    source, output, method, weights, viz_path, max_frames, stride, resize, dtype, device, iterations, fps
) -> None:
    # lazy: numba takes about a second to import (start-up); only this path needs it
    from stillmotion.motion.strength import motion_strength
    from stillmotion.motion.viz import FlowVideoWriter

    if output.suffix.lower() != ".npz":
        raise UserInputError(f"-o {output}: the flow of a video is written as .npz")
    if viz_path is not None:
        video_format(viz_path)  # refuses an unknown extension before any work
    frames = open_frames(source, max_frames=max_frames, stride=stride, resize=resize, fps=fps)
    if frames.frame_count is not None and frames.frame_count < 2:
        raise UserInputError(f"{source} has {frames.frame_count} frame(s); flow needs at least 2")
    _check_flow_size(frames.width, frames.height, resize)
    estimator = _estimator(method, weights, device, iterations)
    strengths: list[float] = []
    top = 0.0
    with contextlib.ExitStack() as stack:
        # The visualisation exits last: its encoder is flushed below, before the .npz is written, so
        # that what is left for the exits is writing the archive and two renames.
        viz = stack.enter_context(FlowVideoWriter(viz_path, frames.fps)) if viz_path is not None else None
        out = stack.enter_context(FlowSequenceWriter(output, dtype=np.dtype(dtype)))
        previous = None
        for frame in progress_iter(frames, total=frames.frame_count, desc=f"flow ({method})", unit="frame"):
            if previous is not None:
                field = estimator(previous, frame)
                out.append(field)
                strengths.append(motion_strength(field))
                top = max(top, float(np.abs(field).max()))
                if viz is not None:
                    viz.write(previous, field)
            previous = frame
        if not strengths:
            raise UserInputError(f"{source} has fewer than 2 frames; flow needs at least 2")
        # Every field has the same size, so the mean of per-field strengths is eq. 8 over the clip.
        out.extras["strength"] = np.float64(np.mean(strengths))
        out.extras["fps"] = np.float64(frames.fps)
        if viz is not None:
            viz.finish()
    click.echo(
        f"{len(strengths)} flow fields of {frames.width}x{frames.height} ({method}), motion strength "
        f"M_s = {np.mean(strengths):.3f} (px/frame at 512 px), largest component {top:.1f} px -> {output}"
        + (f", {viz_path}" if viz_path else ""),
        err=True,
    )


def _check_flow_size(width: int, height: int, resize: int | None) -> None:
    # lazy: numba takes about a second to import (start-up); only this path needs it
    from stillmotion.motion.flow import MIN_FLOW_SIDE

    if min(width, height) < MIN_FLOW_SIDE:
        how = f" after --resize {resize}" if resize is not None else ""
        raise UserInputError(
            f"the frames are {width}x{height}{how}: optical flow needs at least {MIN_FLOW_SIDE} px on "
            "each side" + (" (raise --resize)" if resize is not None else "")
        )


def _report(fields, output, viz_path) -> None:
    mag = np.hypot(fields[..., 0], fields[..., 1])
    click.echo(
        f"flow {fields.shape[2]}x{fields.shape[1]}: mean {mag.mean():.2f} px, max {mag.max():.2f} px "
        f"-> {output}" + (f", {viz_path}" if viz_path else ""),
        err=True,
    )
