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

Engines (looked up by name in :mod:`stillmotion.engines.registry`): ``"warp"``
(:mod:`stillmotion.engines.warp`, no weights) and ``"diffusion"`` (``stillmotion.engines.diffusion``; its
options, :class:`~stillmotion.engines.options.DiffusionOptions` such as ``model``, ``steps``, ``seed``,
``device``, ``dtype``, ``control`` ("auto", "trained", "warp-guided", "none"), ``follow`` and
``freedom``, pass through ``**engine_options``; see :func:`render`).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import resource
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stillmotion.engines.options import RenderRequest
from stillmotion.engines.registry import EngineInfo, get_engine
from stillmotion.errors import MAX_STRENGTH, MAX_WORK_PIXELS, UserInputError
from stillmotion.inputs.arrows import Arrow, referenced_files
from stillmotion.inputs.mask import mask_from_array
from stillmotion.inputs.scene import Scene, load_scene
from stillmotion.io.atomic import AtomicGroup, atomic_path
from stillmotion.io.motion_file import check_speed, load_motion_field, resize_field
from stillmotion.io.outputs import check_outputs
from stillmotion.io.picture import picture_size
from stillmotion.io.video_writer import check_fps, open_video_writer, video_format
from stillmotion.progress import progress_bar

MAX_SIDE = 8192
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

ImageLike = str | os.PathLike | np.ndarray


def parse_size(text: str) -> tuple[int, int]:
    """``"640x360"`` -> (640, 360); UserInputError naming the value otherwise."""
    if not isinstance(text, str):
        raise UserInputError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 512x512")
    parts = text.lower().replace("*", "x").split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise UserInputError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 512x512") from None
    check_size((w, h))
    return w, h


def check_size(size: Sequence[int]) -> tuple[int, int]:
    if not (
        isinstance(size, Sequence | np.ndarray)
        and not isinstance(size, str)
        and len(size) == 2
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in size)
    ):
        raise UserInputError(f"size must be (width, height) in whole pixels, got {size!r}")
    w, h = int(size[0]), int(size[1])
    if not (2 <= w <= MAX_SIDE and 2 <= h <= MAX_SIDE):
        raise UserInputError(f"size {w}x{h}: width and height must be between 2 and {MAX_SIDE} pixels")
    return w, h


def check_number(name: str, value: object, low: float, high: float) -> float:
    """``value`` as a float when it is a real number (numpy scalars too, not bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (low <= value <= high):
        raise UserInputError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def check_frames(frames: object) -> int:
    if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or frames < 1:
        raise UserInputError(f"frames must be a whole number >= 1, got {frames!r}")
    return int(frames)


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise UserInputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_motion_array(motion: np.ndarray, where: str = "motion") -> None:
    """A given field: real (H, W, 2) or (F, H, W, 2), non-empty, finite, within MAX_SPEED."""
    if motion.ndim not in (3, 4) or motion.shape[-1] != 2 or 0 in motion.shape:
        raise UserInputError(
            f"{where} must be an (H, W, 2) array of (dx, dy) or an (F, H, W, 2) sequence, "
            f"got shape {motion.shape}"
        )
    if motion.dtype == bool or not (
        np.issubdtype(motion.dtype, np.floating) or np.issubdtype(motion.dtype, np.integer)
    ):
        raise UserInputError(f"{where} must hold real numbers (pixels per frame), got dtype {motion.dtype}")
    if not np.isfinite(motion).all():
        raise UserInputError(f"{where} holds NaN or infinite values")

    check_speed(motion, where)


def check_work_size(width: int, height: int, what: str = "the warp engine") -> None:
    """Refuse work on more than MAX_WORK_PIXELS pixels at once (memory grows with the pixel count)."""
    if width * height > MAX_WORK_PIXELS:
        k = math.sqrt(MAX_WORK_PIXELS / (width * height))
        hint = f"{int(width * k) // 2 * 2}x{int(height * k) // 2 * 2}"
        raise UserInputError(
            f"the image is {width}x{height} ({width * height / 1e6:.0f} MP): {what} works on at most "
            f"{MAX_WORK_PIXELS / 1e6:.0f} MP at once (memory grows with the pixels); pass --size "
            f"(Python: size=) to work smaller, e.g. --size {hint}"
        )


# The diffusion engine generates at its model's size (about 1 MP); a larger scene only costs the
# memory and time of its full-size motion field, so it is given at most this many pixels.
DIFFUSION_SCENE_PIXELS = 4_000_000


def _diffusion_budget(size: Sequence[int] | None) -> int:
    """Pixels the scene handed to the diffusion engine may keep: enough for its generation size."""
    wanted = int(size[0]) * int(size[1]) if size is not None else 0
    return min(MAX_WORK_PIXELS, max(DIFFUSION_SCENE_PIXELS, wanted))


def _fit_to_limit(scene: Scene, max_pixels: int) -> Scene:
    """The scene shrunk (aspect kept) to at most ``max_pixels``."""
    if scene.width * scene.height <= max_pixels:
        return scene
    k = math.sqrt(max_pixels / (scene.width * scene.height))
    return resize_scene(scene, (max(2, int(scene.width * k)), max(2, int(scene.height * k))))


def resize_scene(scene: Scene, size: Sequence[int]) -> Scene:
    """The scene at ``size`` = (W, H): image resampled, mask and arrows scaled with it."""
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
    max_pixels: int | None = None,
) -> tuple[Scene, np.ndarray | None]:
    """Load and check the inputs: the scene, and its motion field (None when nothing asks for motion).

    The field is ``motion`` when given (resampled to the image), else the dense field of the arrows
    (paper eqs. 5-7); it is zero outside the mask. A scene larger than ``MAX_WORK_PIXELS``
    (:mod:`stillmotion.errors`) is refused (pass ``size``); with ``max_pixels`` a larger scene is
    shrunk to that many pixels instead (what the diffusion engine, which works at its model's size,
    is given).
    """
    # lazy: numba takes about a second to import (start-up); only this path needs it
    from stillmotion.motion.dense import dense_flow_from_arrows

    if motion is not None and not isinstance(motion, np.ndarray | str | os.PathLike):
        raise UserInputError(f"motion must be an array or a .npy/.npz/.flo path, got {motion!r:.80}")
    if isinstance(motion, np.ndarray):
        check_motion_array(motion)
    if size is not None:
        check_size(size)
    if max_pixels is not None and (
        isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral) or max_pixels < 4
    ):
        raise UserInputError(f"max_pixels must be a whole number >= 4, got {max_pixels!r}")
    if size is None and max_pixels is None and isinstance(image, str | os.PathLike):
        check_work_size(*picture_size(image, "image"))  # from the header: refused before decoding
    scene = load_scene(image, arrows, arrows_file, mask)
    if size is not None:
        check_work_size(*check_size(size))
        scene = resize_scene(scene, size)
    elif max_pixels is not None:
        scene = _fit_to_limit(scene, int(max_pixels))
    else:
        check_work_size(scene.width, scene.height)
    w, h = scene.width, scene.height
    field = None
    if motion is not None:
        if isinstance(motion, np.ndarray):
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

    ``size`` (W, H): an engine that works at the scene's size (warp) animates the scene resized to it
    (image, mask, field); one that fits the scene to its model (diffusion) receives it as its generation
    size.

    The stats dict is complete once the iterator is exhausted (engines may count as they go).

    The engine is looked up in :mod:`stillmotion.engines.registry`, which says its defaults, the inputs
    and options it takes and where its entry point lives::

        render(scene: Scene, field: np.ndarray | None, request: RenderRequest, options: dict)
            -> tuple[Iterator[np.ndarray], dict]

    ``request`` (:class:`~stillmotion.engines.options.RenderRequest`) carries frames, fps, strength,
    loop, progress and size; ``options`` are ``engine_options``, names the engine registered (the
    diffusion engine's: the fields of :class:`~stillmotion.engines.options.DiffusionOptions`).
    For the diffusion engine ``scene`` is the input at its own size; ``size`` is the user's ``--size``
    (None: the engine fits the scene to a size the model accepts). ``field`` is (H, W, 2) px/frame at
    the scene's size, zero outside the mask, or None when the user gave neither arrows nor a field.
    ``on_step(done, total)`` is called after every model call (progress
    before the first frame, e.g. in a web front end). ``loop`` reaches the diffusion engine too: with
    ``control="warp-guided"`` (the default for a model without trained motion modules, e.g. stock SVD)
    the warp engine's animation, a loop or forward, is the motion reference; ``control`` is ``auto``,
    ``trained``, ``warp-guided`` or ``none``, ``follow`` / ``freedom`` the warp guidance's knobs.
    """
    info = get_engine(engine)
    frames = check_frames(info.default_frames if frames is None else frames)
    fps = check_fps(info.default_fps if fps is None else fps)
    strength = check_number("strength", strength, 0, MAX_STRENGTH)
    loop = _check_flag("loop", loop)
    progress = _check_flag("progress", progress)
    if not isinstance(scene, Scene):
        raise UserInputError(f"scene must be a Scene (see prepare()), got {type(scene).__name__}")
    if field is not None:
        if not isinstance(field, np.ndarray):
            raise UserInputError(f"field must be an array or None, got {type(field).__name__}")
        check_motion_array(field, "the motion field")

        check_speed(field, "the motion field", strength)
        if strength == 0 or not field.any():
            warnings.warn(
                "the motion is zero everywhere (check the arrows, the mask and --strength): the video "
                "will be a still picture",
                UserWarning,
                stacklevel=2,
            )
    render_fn = info.load()  # the engine's module (and its extra's packages) is imported only now
    _check_engine_options(info, engine_options)
    if info.needs_motion and field is None:
        raise UserInputError(
            "nothing to animate: give arrows (--arrow / --arrows) or a motion field (--motion)"
        )
    if field is not None and field.ndim == 4 and loop and not info.loops_sequences:
        raise UserInputError(
            "a motion sequence (one field per frame step) animates forward only: pass loop=False "
            "(--no-loop), or give one field"
        )
    if not info.fits_size:
        if size is not None and tuple(size) != (scene.width, scene.height):
            scene = resize_scene(scene, size)
            if field is not None:
                field = resize_field(field, scene.width, scene.height)
                if scene.mask is not None:
                    field[..., ~scene.mask, :] = 0.0
        size = None  # the engine animates the scene as it now is
    request = RenderRequest(
        frames=int(frames),
        fps=float(fps),
        strength=float(strength),
        loop=bool(loop),  # diffusion: warp-guided control's reference is a seamless loop or forward motion
        progress=progress,
        size=check_size(size) if size is not None else None,
    )
    iterator, stats = render_fn(scene, field, request, engine_options)
    return iter(iterator), stats


def _check_run_options(engine, frames, fps, strength, loop, progress, size) -> EngineInfo:
    """The cheap checks of :func:`render`, run before any input is loaded; returns the engine."""
    info = get_engine(engine)
    if size is not None:
        check_size(size)
    if frames is not None:
        check_frames(frames)
    if fps is not None:
        check_fps(fps)
    check_number("strength", strength, 0, MAX_STRENGTH)
    _check_flag("loop", loop)
    _check_flag("progress", progress)
    return info


def _check_engine_options(info: EngineInfo, options: dict[str, Any]) -> None:
    """Unknown names and bad values of an engine's options are user errors, not TypeErrors."""
    info.check_options(options)
    for name, low in (("steps", 1), ("seed", -(2**63)), ("overlap", 0)):
        v = options.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low):
            raise UserInputError(f"{name} must be a whole number >= {low}, got {v!r}")
    if "gamma" in options:
        check_number("gamma", options["gamma"], 0.0, 1.0)
    if "omega" in options:
        check_number("omega", options["omega"], 0.0, MAX_STRENGTH)
    for name in ("offload", "refine"):
        if name in options:
            _check_flag(name, options[name])
    choices = {"device": ("auto", "cpu", "cuda"), "dtype": ("auto", "fp32", "fp16", "bf16")}
    for name, allowed in choices.items():
        v = options.get(name)
        ok = isinstance(v, str) and (v in allowed or (name == "device" and v.startswith("cuda:")))
        if v is not None and not ok:
            raise UserInputError(f"{name} must be one of {', '.join(allowed)}, got {v!r}")
    model = options.get("model")
    if model is not None and not isinstance(model, str | os.PathLike):
        raise UserInputError(f"model must be a folder path or a Hugging Face id, got {model!r:.80}")


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
    fits = _check_run_options(engine, frames, fps, strength, loop, progress, size).fits_size
    # The warp engine works at the scene's size; the diffusion engine fits the size to its model.
    scene, field = prepare(
        image,
        arrows,
        arrows_file=arrows_file,
        mask=mask,
        motion=motion,
        size=None if fits else size,
        max_pixels=_diffusion_budget(size) if fits else None,
    )
    iterator, _ = render(
        scene,
        field,
        engine=engine,
        frames=frames,
        fps=fps,
        strength=strength,
        loop=loop,
        size=size if fits else None,
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
        # lazy: torch takes seconds to import (start-up); only this path needs it
        import torch

        return torch.from_numpy(video).permute(0, 3, 1, 2).float().div_(255.0)
    return video


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def save_field_picture(path: str | os.PathLike, field: np.ndarray) -> Path:
    """Write ``field`` as a colour-wheel picture (hue = direction, saturation = speed), atomically."""
    path = Path(path)
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        raise UserInputError(f"motion picture {path}: use a .png, .jpg, .webp or .bmp file name")
    with atomic_path(path) as tmp:
        _write_field_picture(tmp, field, path)
    return path


def _write_field_picture(target: Path, field: np.ndarray, shown: Path) -> None:
    # lazy: numba takes about a second to import (start-up); only this path needs it
    from stillmotion.motion.viz import flow_to_color

    # the standard (Middlebury) colour wheel: hue = direction; a sequence is shown by its mean field
    rgb = flow_to_color(field.mean(0) if field.ndim == 4 else field)
    if not cv2.imwrite(str(target), rgb[..., ::-1].copy()):
        raise UserInputError(f"could not write the motion picture {shown}")


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
    overwrite: bool = False,
    **engine_options: Any,
) -> dict[str, Any]:
    """Animate and stream the frames into ``output`` (.mp4, .gif, .webp or a PNG folder).

    Returns the report (engine, frames, width, height, fps, seconds_total, seconds_render,
    seconds_encode, peak_memory_mb, plus the engine's stats), also written as JSON to ``report``.
    Outputs are checked before any work (:mod:`stillmotion.io.outputs`): none may be an input or
    another output, and an existing PNG folder that is not ours is replaced only with
    ``overwrite=True``. Nothing is written when anything fails: the video, motion picture and
    report are written under temporary names and all renamed into place at the end.
    """
    start = time.perf_counter()
    for name, value in (("output", output), ("save_motion", save_motion), ("report", report)):
        if (value is not None or name == "output") and not isinstance(value, str | os.PathLike):
            raise UserInputError(f"{name} must be a file path, got {value!r:.80}")
    fmt = video_format(output)  # refuse a bad extension before any work
    if save_motion is not None and Path(save_motion).suffix.lower() not in PICTURE_SUFFIXES:
        raise UserInputError(f"--save-motion {save_motion}: use a .png, .jpg, .webp or .bmp file name")
    if report is not None and Path(report).suffix.lower() != ".json":
        raise UserInputError(f"--report {report}: the report is JSON; use a file name ending in .json")
    overwrite = _check_flag("overwrite", overwrite)
    info = _check_run_options(engine, frames, fps, strength, loop, progress, size)
    fps = info.default_fps if fps is None else fps
    check_fps(fps, fmt)
    check_outputs(
        [("-o", output, "folder" if fmt == "png" else "file"), ("--save-motion", save_motion, "file"),
         ("--report", report, "file")],
        [("IMAGE", image), ("--arrows", arrows_file), ("--mask", mask), ("--motion", motion),
         *referenced_files(arrows_file)],
        overwrite=overwrite,
    )  # fmt: skip
    scene, field = prepare(
        image,
        arrows,
        arrows_file=arrows_file,
        mask=mask,
        motion=motion,
        size=None if info.fits_size else size,
        max_pixels=_diffusion_budget(size) if info.fits_size else None,
    )
    if save_motion is not None and field is None:
        raise UserInputError("--save-motion: there is no motion field (give arrows or --motion)")
    n = info.default_frames if frames is None else frames
    iterator, stats = render(
        scene,
        field,
        engine=engine,
        frames=n,
        fps=fps,
        strength=strength,
        loop=loop,
        size=size if info.fits_size else None,
        progress=progress and info.step_progress,
        **engine_options,
    )
    seconds_render = seconds_encode = 0.0
    size_out = None
    # Every output is written under a temporary name; all are renamed together at the very end.
    with AtomicGroup() as group:
        writer = group.enter(open_video_writer(output, fps=fps, overwrite=overwrite))
        picture_tmp = group.path(save_motion) if save_motion is not None else None
        report_tmp = group.path(report) if report is not None else None
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
        writer.finish()
        seconds_encode += time.perf_counter() - t
        if picture_tmp is not None:
            _write_field_picture(picture_tmp, field, Path(save_motion))
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
        if report_tmp is not None:
            report_tmp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return result
