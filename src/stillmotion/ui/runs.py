"""What a queued job does: the photo, arrows and mask of a session -> a video file in its folder.

The page's settings map one to one onto ``stillmotion animate`` options, and ``cli_command`` prints
the command that replays a drawing from the terminal. Engines are imported when a job runs, so the
server starts quickly and says which engine is missing instead of failing to start.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from stillmotion import api
from stillmotion.engines.registry import engine_names, get_engine
from stillmotion.errors import UserInputError
from stillmotion.inputs.arrows import Arrow
from stillmotion.io.video_writer import open_video_writer

PREVIEW_SIDE = 256
PREVIEW_FRAMES = 24


@dataclass(frozen=True)
class Settings:
    kind: str
    engine: str
    strength: float
    frames: int
    fps: int
    steps: int
    gamma: float
    omega: float
    seed: int
    long_method: str
    size: int  # longer side of the output, pixels
    loop: bool
    model_dir: Path | None
    control: str = "auto"  # diffusion: auto, trained, warp-guided or none
    prompt: str = ""  # Wan models: the text prompt ("": the engine's default)

    @classmethod
    def from_request(cls, body: Any, model_dir: Path | None) -> Settings:
        s = cls(
            body.kind,
            body.engine,
            body.strength,
            body.frames,
            body.fps,
            body.steps,
            body.gamma,
            body.omega,
            body.seed,
            body.long_method,
            body.size,
            body.loop,
            model_dir,
            getattr(body, "control", "auto"),
            getattr(body, "prompt", "") or "",
        )
        if body.kind == "preview":
            # A quick look: the warp engine, small and short, whatever the full run will use.
            s = cls(
                "preview",
                "warp",
                s.strength,
                min(s.frames, PREVIEW_FRAMES),
                s.fps,
                s.steps,
                s.gamma,
                s.omega,
                s.seed,
                s.long_method,
                min(s.size, PREVIEW_SIDE),
                s.loop,
                model_dir,
            )
        return s


def output_size(width: int, height: int, side: int) -> tuple[int, int]:
    """Scale so the longer side is at most ``side``; even sides (H.264 with yuv420p needs them)."""
    scale = min(1.0, side / max(width, height))
    w, h = max(2, round(width * scale)), max(2, round(height * scale))
    return w - w % 2, h - h % 2


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def engine_status(model_dir: Path | None) -> dict[str, dict[str, Any]]:
    """Which engines can run here, and if not, why (shown on the page)."""
    return {name: one_engine_status(name, model_dir) for name in engine_names()}


def one_engine_status(name: str, model_dir: Path | None) -> dict[str, Any]:
    """One engine's entry of :func:`engine_status`."""
    info = get_engine(name)
    status: dict[str, Any] = {"available": False, "reason": ""}
    if not _has(info.module):
        status["reason"] = f"the {name} engine ({info.module}) is not part of this installation"
    elif "model" not in info.options:  # an engine without weights runs as it is
        status["available"] = True
    elif model_dir is not None and not Path(model_dir).is_dir():
        status["reason"] = f"--model {model_dir} is not a folder"
    elif model_dir is None and _default_model() is None:
        status["reason"] = "no model: start the server with --model DIR (a stillmotion or SVD model folder)"
    else:
        status["available"] = True
        status["model"] = str(model_dir or _default_model())
        status["backbone"] = "wan" if _is_wan(model_dir) else "svd"  # the page offers a prompt for Wan
    return status


def _is_wan(model_dir: Path | None) -> bool:
    if model_dir is None:
        return False
    # lazy: diffusers (an optional extra), numba and torch load only on this path
    from stillmotion.diffusion.wan import wan_model_dir

    return wan_model_dir(model_dir) is not None


def _default_model() -> Path | None:
    """The model bundled with the package, when this installation has one."""
    try:
        # lazy, guarded: a part missing from this installation is reported, not an import error
        from stillmotion.engines.diffusion import default_model
    except ImportError:
        return None
    try:
        return Path(default_model())
    except UserInputError:
        return None


def cli_command(
    image_name: str,
    arrows_name: str,
    body: Any,
    model_dir: Path | None,
    has_mask: bool,
    image_size: tuple[int, int],
) -> str:
    """The ``stillmotion animate`` command that renders the same video from the exported drawing."""
    info = get_engine(body.engine)
    w, h = output_size(*image_size, body.size)
    parts = ["stillmotion", "animate", image_name or "photo.jpg", "--arrows", arrows_name]
    if has_mask:
        parts += ["--mask", "mask.png"]
    parts += ["-o", "animation.mp4", "--engine", body.engine]
    if not info.fits_size:  # an engine working at the scene's size gets the page's output size
        parts += ["--size", f"{w}x{h}"]
    parts += ["--frames", str(body.frames), "--fps", str(body.fps), "--strength", f"{body.strength:g}"]
    for flag, value in _option_flags(body, model_dir, info.options):
        parts += [flag, value]
    parts += ["--loop" if body.loop else "--no-loop"]  # diffusion: warp-guided control's reference
    return shlex.join(parts)


def _option_flags(body: Any, model_dir: Path | None, takes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(flag, value) of the page's settings that the engine takes, in the command's order."""
    flags = []
    if "model" in takes and model_dir is not None:
        flags.append(("model", "--model", str(model_dir)))
    flags += [("steps", "--steps", str(body.steps)), ("seed", "--seed", str(body.seed))]
    if "prompt" in takes and getattr(body, "prompt", "") and _is_wan(model_dir):
        flags.append(("prompt", "--prompt", body.prompt))
    flags += [("long_method", "--long-method", body.long_method), ("gamma", "--gamma", f"{body.gamma:g}"),
              ("omega", "--omega", f"{body.omega:g}"),
              ("control", "--control", getattr(body, "control", "auto"))]  # fmt: skip
    return [(flag, value) for name, flag, value in flags if name in takes]


def render(
    job, session, image: np.ndarray, arrows: list[Arrow], mask: np.ndarray | None, settings: Settings
) -> dict:
    """Run one job the way ``stillmotion animate`` would; write ``<job id>.mp4`` in the session folder.

    The same ``stillmotion.api`` calls as the command line, with the photo, arrows (in the photo's
    pixels) and mask held by the session, so the command printed on the page gives the same frames.
    """
    info = get_engine(settings.engine)
    status = one_engine_status(settings.engine, settings.model_dir)
    if not status["available"]:
        raise UserInputError(f"the {settings.engine} engine is unavailable: {status['reason']}")
    t0 = time.perf_counter()
    job.report(0.0, "motion field")
    # As ``stillmotion.api.iter_frames`` does: warp animates the scene at the chosen size; the
    # diffusion engine brings the scene to a size its model accepts by itself.
    size = None if info.fits_size else output_size(image.shape[1], image.shape[0], settings.size)
    scene, field = api.prepare(image, arrows, mask=mask, size=size)
    # Diffusion: the model calls are the work (a segment's frames come out only after its last call),
    # so they fill 90% of the bar and the frames written the rest; a cancel takes effect at the next call.
    done = {"calls": 0.0, "frames": 0.0}

    def fraction() -> float:
        if not info.step_progress:
            return 0.01 + 0.98 * done["frames"]
        return 0.01 + 0.98 * (0.9 * done["calls"] + 0.1 * done["frames"])

    def on_step(calls: int, total: int) -> None:
        done["calls"] = calls / max(total, 1)
        job.report(fraction(), f"denoising: model call {calls} of {total}")

    if "model" in info.options:
        job.report(0.0, "loading the model")
    page = dict(
        model=str(settings.model_dir) if settings.model_dir else None, steps=settings.steps,
        seed=settings.seed, long_method=settings.long_method, gamma=settings.gamma, omega=settings.omega,
        control=settings.control, on_step=on_step,
    )  # fmt: skip
    options = {k: v for k, v in page.items() if k in info.options}  # the settings this engine takes
    if "prompt" in info.options and settings.prompt and _is_wan(settings.model_dir):
        options["prompt"] = settings.prompt
    frames, stats = api.render(
        scene, field, engine=settings.engine, frames=settings.frames, fps=settings.fps,
        strength=settings.strength, loop=settings.loop, **options,
    )  # fmt: skip
    job.report(0.01, info.activity)
    # The GIF is made from the MP4 when someone asks for it (``gif_from_mp4``): GIF encoding costs
    # about twice the MP4's, and most runs are only watched.
    outputs = {"mp4": session.file(f"{job.id}.mp4")}
    seconds_render = seconds_encode = 0.0
    shape = (0, 0)
    with contextlib.ExitStack() as stack:
        # Every output streams at once: memory does not grow with the number of frames. A failure or a
        # cancel leaves the ``with`` by an exception and the writers delete their temporary files.
        writers = [stack.enter_context(open_video_writer(p, fps=settings.fps)) for p in outputs.values()]
        t = time.perf_counter()
        for i, frame in enumerate(frames):
            t_frame = time.perf_counter()
            seconds_render += t_frame - t
            for writer in writers:
                writer.write(frame)
            shape = frame.shape[:2]
            t = time.perf_counter()
            seconds_encode += t - t_frame
            done["frames"] = (i + 1) / settings.frames
            job.report(fraction(), f"frame {i + 1} of {settings.frames}")
    report = {
        "engine": settings.engine,
        "frames": writers[0].frames_written,
        "width": int(shape[1]),
        "height": int(shape[0]),
        "fps": settings.fps,
        "seconds_total": round(time.perf_counter() - t0, 3),
        "seconds_render": round(seconds_render, 3),
        "seconds_encode": round(seconds_encode, 3),
    }
    report.update({k: v for k, v in stats.items() if isinstance(v, int | float | str | bool | type(None))})
    return {"files": {k: str(v) for k, v in outputs.items()}, "report": report}


def warm_up() -> None:
    """Run the warp engine once on a tiny picture, so compiled kernels are ready before the first user."""
    image = np.zeros((16, 16, 3), np.uint8)
    scene, field = api.prepare(image, [Arrow(((2.0, 8.0), (12.0, 8.0)))])
    frames, _ = api.render(scene, field, engine="warp", frames=2)
    for _ in frames:
        pass


def gif_from_mp4(job, src: Path, dst: Path) -> dict:
    """Re-encode a finished run's MP4 as a GIF, frame by frame (CRF 18 detail is below GIF's palette)."""
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        total = stream.frames or 0
        fps = float(stream.average_rate or 25)
        with open_video_writer(dst, fps=fps) as writer:
            for i, frame in enumerate(container.decode(stream)):
                writer.write(frame.to_ndarray(format="rgb24"))
                job.report((i + 1) / total if total else 0.5, f"GIF frame {i + 1}")
    return {"gif": str(dst)}
