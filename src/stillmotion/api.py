"""The Python API: animate a still image in a few lines, in memory or straight to a file.

    import stillmotion

    frames = stillmotion.animate("photo.jpg", arrows=["100,200,160,210"], mask="mask.png", frames=60)
    frames.shape                      # (60, H, W, 3) uint8, nothing written to disk

    for frame in stillmotion.iter_frames("photo.jpg", motion=field, frames=500):
        ...                           # one frame at a time: memory does not grow with the length

    report = stillmotion.animate_to_file("photo.jpg", "loop.mp4", arrows_file="arrows.json")

Inputs: ``image`` is a path or an RGB uint8 (H, W, 3) array; ``arrows`` are :class:`Arrow` objects
or ``"X0,Y0,X1,Y1[,STRENGTH]"`` strings (image pixels); ``arrows_file`` is a JSON file (see docs/usage.md);
``mask`` a path or an (H, W) array (True / white may move); ``motion`` a given field instead of
arrows: an (H, W, 2) float array in pixels per frame, an (F, H, W, 2) sequence (one field per frame
step, e.g. a real video's optical flow; forward animation, the last field repeats) or a
``.npy``/``.npz``/``.flo`` path (see :mod:`stillmotion.io.motion_file` for units).
``size=(W, H)`` resizes image, mask, arrows and field before animating.

Engines: ``"warp"`` (:mod:`stillmotion.engines.warp`, no weights) and ``"diffusion"``
(``stillmotion.engines.diffusion``; its options such as ``model``, ``steps``, ``seed``,
``device``, ``dtype`` pass through ``**engine_options``; see :func:`render`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stillmotion.errors import UserInputError
from stillmotion.inputs.arrows import Arrow
from stillmotion.inputs.scene import Scene, load_scene

ENGINES = ("warp", "diffusion")
# frames, fps when not given: a 3-second seamless loop for the warp engine; one SVD base clip.
DEFAULT_FRAMES = {"warp": 90, "diffusion": 25}
DEFAULT_FPS = {"warp": 30.0, "diffusion": 8.0}
MAX_SIDE = 8192
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

ImageLike = str | os.PathLike | np.ndarray


def parse_size(text: str) -> tuple[int, int]:
    """``"640x360"`` -> (640, 360); UserInputError naming the value otherwise."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise UserInputError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 512x512") from None
    check_size((w, h))
    return w, h


def check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(v, int | np.integer) for v in size):
        raise UserInputError(f"size must be (width, height) in whole pixels, got {size!r}")
    w, h = int(size[0]), int(size[1])
    if not (2 <= w <= MAX_SIDE and 2 <= h <= MAX_SIDE):
        raise UserInputError(f"size {w}x{h}: width and height must be between 2 and {MAX_SIDE} pixels")
    return w, h


def resize_scene(scene: Scene, size: Sequence[int]) -> Scene:
    """The scene at ``size`` = (W, H): image resampled, mask and arrows scaled with it."""
    import cv2

    from stillmotion.inputs.mask import mask_from_array

    w, h = check_size(size)
    if (w, h) == (scene.width, scene.height):
        return scene
    shrink = w < scene.width and h < scene.height
    image = cv2.resize(scene.image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    sx, sy = w / scene.width, h / scene.height
    arrows = [a.scaled(sx, sy) for a in scene.arrows]
    mask = None if scene.mask is None else mask_from_array(scene.mask, w, h)
    return Scene(np.ascontiguousarray(image), arrows, mask)


def prepare(
    image: ImageLike,
    arrows: Sequence[str | Arrow] = (),
    *,
    arrows_file: str | os.PathLike | None = None,
    mask: str | os.PathLike | np.ndarray | None = None,
    motion: str | os.PathLike | np.ndarray | None = None,
    size: Sequence[int] | None = None,
) -> tuple[Scene, np.ndarray | None]:
    """Load and check the inputs: the scene, and its motion field (None when nothing asks for motion).

    The field is ``motion`` when given (resampled to the image), else the dense field of the arrows
    (paper eqs. 5-7); it is zero outside the mask.
    """
    from stillmotion.io.motion_file import load_motion_field, resize_field
    from stillmotion.motion.dense import dense_flow_from_arrows

    scene = load_scene(image, arrows, arrows_file, mask)
    if size is not None:
        scene = resize_scene(scene, size)
    w, h = scene.width, scene.height
    field = None
    if motion is not None:
        if isinstance(motion, np.ndarray):
            if motion.ndim not in (3, 4) or motion.shape[-1] != 2 or motion.shape[0] < 1:
                raise UserInputError(
                    "motion must be an (H, W, 2) array of (dx, dy) or an (F, H, W, 2) sequence, "
                    f"got shape {motion.shape}"
                )
            if not np.isfinite(motion).all():
                raise UserInputError("motion holds NaN or infinite values")
            field = resize_field(motion, w, h)
        else:
            field = load_motion_field(motion, w, h)
        if scene.arrows:
            raise UserInputError("give either arrows or a motion field (--motion), not both")
    elif scene.arrows:
        field = dense_flow_from_arrows(scene.arrows, w, h, mask=scene.mask)
    if field is not None and scene.mask is not None:
        field = field.copy()
        field[..., ~scene.mask, :] = 0.0
    return scene, field


def render(
    scene: Scene,
    field: np.ndarray | None,
    *,
    engine: str = "warp",
    frames: int | None = None,
    fps: float | None = None,
    strength: float = 1.0,
    loop: bool = True,
    size: Sequence[int] | None = None,
    progress: bool = False,
    **engine_options: Any,
) -> tuple[Iterator[np.ndarray], dict[str, Any]]:
    """Start an engine: an iterator of uint8 (H, W, 3) frames and a stats dict.

    ``size`` (W, H): the warp engine animates the scene resized to it (image, mask, field); the
    diffusion engine receives it as its generation size.

    The stats dict is complete once the iterator is exhausted (engines may count as they go).

    Contract with the diffusion engine (``stillmotion.engines.diffusion``)::

        animate_diffusion(scene: Scene, field: np.ndarray | None, *, frames: int, fps: float,
                          strength: float, progress: bool, size=None, model=None, steps=None,
                          seed=0, device="auto", dtype="auto", offload=False, refine=True,
                          long_method=None, gamma=0.8, omega=0.2, on_step=None)
            -> tuple[Iterator[np.ndarray], dict]

    ``scene`` is the input at its own size; ``size`` is the user's ``--size`` (None: the engine
    fits the scene to a size the model accepts). ``field`` is (H, W, 2) px/frame at the scene's
    size, zero outside the mask, or None when the user gave neither arrows nor a field. The CLI
    passes every option above. ``on_step(done, total)`` is called after every model call (progress
    before the first frame, e.g. in a web front end).
    """
    if engine not in ENGINES:
        raise UserInputError(f"engine {engine!r} is unknown; choose one of {', '.join(ENGINES)}")
    frames = DEFAULT_FRAMES[engine] if frames is None else frames
    fps = DEFAULT_FPS[engine] if fps is None else fps
    if not (isinstance(frames, int | np.integer) and frames >= 1):
        raise UserInputError(f"frames must be a whole number >= 1, got {frames!r}")
    if not (isinstance(fps, int | float) and np.isfinite(fps) and 0 < fps <= 1000):
        raise UserInputError(f"fps must be a number in (0, 1000], got {fps!r}")
    if not (np.isfinite(strength) and strength >= 0):
        raise UserInputError(f"strength must be a finite number >= 0, got {strength!r}")
    if engine == "warp":
        if engine_options:
            raise UserInputError(f"the warp engine takes no option(s) {', '.join(sorted(engine_options))}")
        if field is None:
            raise UserInputError(
                "nothing to animate: give arrows (--arrow / --arrows) or a motion field (--motion)"
            )
        from stillmotion.engines.warp import EulerianWarp
        from stillmotion.io.motion_file import resize_field

        if field.ndim == 4 and loop:
            raise UserInputError(
                "a motion sequence (one field per frame step) animates forward only: pass loop=False "
                "(--no-loop), or give one field"
            )
        if size is not None and tuple(size) != (scene.width, scene.height):
            scene = resize_scene(scene, size)
            field = resize_field(field, scene.width, scene.height)
            if scene.mask is not None:
                field[..., ~scene.mask, :] = 0.0
        warp = EulerianWarp(
            scene.image, field, frames=int(frames), loop=loop, strength=strength, mask=scene.mask
        )
        stats: dict[str, Any] = {"loop": bool(loop), "strength": float(strength)}

        def frames_then_stats() -> Iterator[np.ndarray]:
            yield from warp.frames(progress=progress)
            stats.update(warp.stats)

        return frames_then_stats(), stats
    try:
        from stillmotion.engines.diffusion import animate_diffusion
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("stillmotion.engines.diffusion"):
            raise UserInputError(
                "diffusion engine not available: stillmotion.engines.diffusion is not installed"
            ) from None
        raise UserInputError(
            f"diffusion engine not available: missing package {exc.name!r} "
            "(pip install 'stillmotion[diffusion]')"
        ) from None
    iterator, stats = animate_diffusion(
        scene,
        field,
        frames=int(frames),
        fps=float(fps),
        strength=float(strength),
        progress=progress,
        **({"size": check_size(size)} if size is not None else {}),
        **engine_options,
    )
    return iter(iterator), stats


def iter_frames(
    image: ImageLike,
    arrows: Sequence[str | Arrow] = (),
    *,
    arrows_file: str | os.PathLike | None = None,
    mask: str | os.PathLike | np.ndarray | None = None,
    motion: str | os.PathLike | np.ndarray | None = None,
    engine: str = "warp",
    frames: int | None = None,
    fps: float | None = None,
    strength: float = 1.0,
    loop: bool = True,
    size: Sequence[int] | None = None,
    progress: bool = False,
    **engine_options: Any,
) -> Iterator[np.ndarray]:
    """Yield the animation's frames one by one (uint8 (H, W, 3)); inputs are checked before the first."""
    # The warp engine works at the scene's size; the diffusion engine fits the size to its model.
    scene, field = prepare(
        image,
        arrows,
        arrows_file=arrows_file,
        mask=mask,
        motion=motion,
        size=size if engine == "warp" else None,
    )
    iterator, _ = render(
        scene,
        field,
        engine=engine,
        frames=frames,
        fps=fps,
        strength=strength,
        loop=loop,
        size=None if engine == "warp" else size,
        progress=progress,
        **engine_options,
    )
    return iterator


def animate(
    image: ImageLike,
    arrows: Sequence[str | Arrow] = (),
    *,
    arrows_file: str | os.PathLike | None = None,
    mask: str | os.PathLike | np.ndarray | None = None,
    motion: str | os.PathLike | np.ndarray | None = None,
    engine: str = "warp",
    frames: int | None = None,
    fps: float | None = None,
    strength: float = 1.0,
    loop: bool = True,
    size: Sequence[int] | None = None,
    output_type: str = "np",
    progress: bool = False,
    **engine_options: Any,
):
    """All frames at once, without touching disk.

    ``output_type="np"``: uint8 array (N, H, W, 3). ``"pt"``: torch float32 (N, 3, H, W) in [0, 1]
    (diffusers' convention). For long videos prefer :func:`iter_frames` or :func:`animate_to_file`.
    """
    if output_type not in ("np", "pt"):
        raise UserInputError(f"output_type must be 'np' or 'pt', got {output_type!r}")
    frames_iter = iter_frames(
        image,
        arrows,
        arrows_file=arrows_file,
        mask=mask,
        motion=motion,
        engine=engine,
        frames=frames,
        fps=fps,
        strength=strength,
        loop=loop,
        size=size,
        progress=progress,
        **engine_options,
    )
    video = np.stack(list(frames_iter))
    if output_type == "pt":
        import torch

        return torch.from_numpy(video).permute(0, 3, 1, 2).float().div_(255.0)
    return video


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def save_field_picture(path: str | os.PathLike, field: np.ndarray) -> Path:
    """Write ``field`` as a colour-wheel picture (hue = direction, saturation = speed), atomically."""
    import cv2

    from stillmotion.io.atomic import atomic_path

    path = Path(path)
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        raise UserInputError(f"motion picture {path}: use a .png, .jpg, .webp or .bmp file name")
    from stillmotion.motion.viz import flow_to_color

    # the standard (Middlebury) colour wheel: hue = direction; a sequence is shown by its mean field
    rgb = flow_to_color(field.mean(0) if field.ndim == 4 else field)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), rgb[..., ::-1].copy()):
            raise UserInputError(f"could not write the motion picture {path}")
    return path


def animate_to_file(
    image: ImageLike,
    output: str | os.PathLike,
    arrows: Sequence[str | Arrow] = (),
    *,
    arrows_file: str | os.PathLike | None = None,
    mask: str | os.PathLike | np.ndarray | None = None,
    motion: str | os.PathLike | np.ndarray | None = None,
    engine: str = "warp",
    frames: int | None = None,
    fps: float | None = None,
    strength: float = 1.0,
    loop: bool = True,
    size: Sequence[int] | None = None,
    save_motion: str | os.PathLike | None = None,
    report: str | os.PathLike | None = None,
    progress: bool = False,
    **engine_options: Any,
) -> dict[str, Any]:
    """Animate and stream the frames into ``output`` (.mp4, .gif, .webp or a PNG folder).

    Returns the report (engine, frames, width, height, fps, seconds_total, seconds_render,
    seconds_encode, peak_memory_mb, plus the engine's stats), also written as JSON to ``report``.
    Nothing is written when anything fails: the video, motion picture and report appear only at the
    end, each atomically.
    """
    import json

    from stillmotion.io.atomic import atomic_path
    from stillmotion.io.video_writer import open_video_writer, video_format
    from stillmotion.progress import progress_bar

    start = time.perf_counter()
    fmt = video_format(output)  # refuse a bad extension before any work
    if save_motion is not None and Path(save_motion).suffix.lower() not in PICTURE_SUFFIXES:
        raise UserInputError(f"--save-motion {save_motion}: use a .png, .jpg, .webp or .bmp file name")
    scene, field = prepare(
        image,
        arrows,
        arrows_file=arrows_file,
        mask=mask,
        motion=motion,
        size=size if engine == "warp" else None,
    )
    if save_motion is not None and field is None:
        raise UserInputError("--save-motion: there is no motion field (give arrows or --motion)")
    fps = DEFAULT_FPS.get(engine, 30.0) if fps is None else fps
    n = DEFAULT_FRAMES.get(engine, 25) if frames is None else frames
    iterator, stats = render(
        scene,
        field,
        engine=engine,
        frames=n,
        fps=fps,
        strength=strength,
        loop=loop,
        size=None if engine == "warp" else size,
        progress=progress and engine != "warp",
        **engine_options,
    )
    seconds_render = seconds_encode = 0.0
    size_out = None
    with open_video_writer(output, fps=fps) as writer:
        with progress_bar(total=n, desc=f"{engine} + encode", enabled=progress, unit="frame") as bar:
            while True:
                t = time.perf_counter()
                frame = next(iterator, None)
                seconds_render += time.perf_counter() - t
                if frame is None:
                    break
                t = time.perf_counter()
                writer.write(frame)
                seconds_encode += time.perf_counter() - t
                size_out = writer.size
                bar.update(1)
        t = time.perf_counter()
        writer.close()
        seconds_encode += time.perf_counter() - t
    if save_motion is not None:
        save_field_picture(save_motion, field)
    result: dict[str, Any] = {
        "engine": engine,
        "output": str(output),
        "format": fmt,
        "frames": writer.frames_written,
        "width": size_out[0] if size_out else scene.width,
        "height": size_out[1] if size_out else scene.height,
        "fps": float(fps),
        "seconds_total": round(time.perf_counter() - start, 4),
        "seconds_render": round(seconds_render, 4),
        "seconds_encode": round(seconds_encode, 4),
        "peak_memory_mb": round(peak_memory_mb(), 1),
    }
    for key, value in stats.items():
        result.setdefault(key, value)
    if report is not None:
        with atomic_path(report) as tmp:
            tmp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return result
