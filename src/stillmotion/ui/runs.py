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

import numpy as np

from stillmotion.errors import UserInputError
from stillmotion.inputs.arrows import Arrow

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
    warp = {"available": _has("stillmotion.engines.warp"), "reason": ""}
    if not warp["available"]:
        warp["reason"] = "the warp engine (stillmotion.engines.warp) is not part of this installation"
    diffusion = {"available": False, "reason": ""}
    if not _has("stillmotion.engines.diffusion"):
        diffusion["reason"] = (
            "the diffusion engine (stillmotion.engines.diffusion) is not part of this installation"
        )
    elif model_dir is not None and not Path(model_dir).is_dir():
        diffusion["reason"] = f"--model {model_dir} is not a folder"
    elif model_dir is None and _default_model() is None:
        diffusion["reason"] = (
            "no model: start the server with --model DIR (a stillmotion or SVD model folder)"
        )
    else:
        diffusion["available"] = True
        diffusion["model"] = str(model_dir or _default_model())
    return {"warp": warp, "diffusion": diffusion}


def _default_model() -> Path | None:
    """The model bundled with the package, when this installation has one."""
    try:
        from stillmotion.engines import diffusion as d
    except ImportError:
        return None
    finder = getattr(d, "default_model_dir", None)
    path = finder() if callable(finder) else None
    return Path(path) if path else None


def cli_command(
    image_name: str, arrows_name: str, body: Any, model_dir: Path | None, has_mask: bool = False
) -> str:
    """The ``stillmotion animate`` command that renders the same video from the exported drawing."""
    image = image_name if image_name else "photo.jpg"
    parts = ["stillmotion", "animate", image, "--arrows", arrows_name]
    if has_mask:
        parts += ["--mask", "mask.png"]
    out = "animation.mp4"
    parts += [
        "-o",
        out,
        "--engine",
        body.engine,
        "--frames",
        str(body.frames),
        "--fps",
        str(body.fps),
        "--strength",
        f"{body.strength:g}",
    ]
    parts += ["--loop" if body.loop else "--no-loop"]
    parts += ["--max-side", str(body.size)]
    if body.engine == "diffusion":
        if model_dir is not None:
            parts += ["--model", str(model_dir)]
        parts += [
            "--steps",
            str(body.steps),
            "--seed",
            str(body.seed),
            "--long-method",
            body.long_method,
            "--gamma",
            f"{body.gamma:g}",
            "--omega",
            f"{body.omega:g}",
        ]
    return shlex.join(parts)


def _scaled_inputs(
    image: np.ndarray, arrows: list[Arrow], mask: np.ndarray | None, side: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Photo, mask and dense field at the output size (longer side ``side``)."""
    import cv2

    from stillmotion.motion.dense import dense_flow_from_arrows

    h0, w0 = image.shape[:2]
    w, h = output_size(w0, h0, side)
    small = image if (w, h) == (w0, h0) else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    small_mask = None
    if mask is not None:
        small_mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    field = dense_flow_from_arrows([a.scaled(w / w0, h / h0) for a in arrows], w, h, mask=small_mask)
    return np.ascontiguousarray(small), small_mask, field


def _frames(settings: Settings, image: np.ndarray, field: np.ndarray, mask: np.ndarray | None):
    if settings.engine == "warp":
        from stillmotion.engines.warp import warp_frames

        return warp_frames(
            image, field, frames=settings.frames, loop=settings.loop, strength=settings.strength, mask=mask
        )
    raise UserInputError(
        engine_status(settings.model_dir)["diffusion"]["reason"] or "diffusion is not wired yet"
    )


def render(
    job, session, image: np.ndarray, arrows: list[Arrow], mask: np.ndarray | None, settings: Settings
) -> dict:
    """Run one job; write ``<job id>.mp4`` (and ``.gif`` for full runs) in the session folder."""
    status = engine_status(settings.model_dir)[settings.engine]
    if not status["available"]:
        raise UserInputError(f"the {settings.engine} engine is unavailable: {status['reason']}")
    t0 = time.perf_counter()
    job.report(0.0, "motion field")
    small, small_mask, field = _scaled_inputs(image, arrows, mask, settings.size)
    h, w = small.shape[:2]
    outputs = {"mp4": session.file(f"{job.id}.mp4")}
    if settings.kind == "full":
        outputs["gif"] = session.file(f"{job.id}.gif")
    job.report(0.01, "starting the engine")
    seconds_render = 0.0
    with _writers(outputs, settings.fps, (w, h)) as write:
        t = time.perf_counter()
        for i, frame in enumerate(_frames(settings, small, field, small_mask)):
            seconds_render += time.perf_counter() - t
            write(frame)
            job.report(0.01 + 0.98 * (i + 1) / settings.frames, f"frame {i + 1} of {settings.frames}")
            t = time.perf_counter()
    report = {
        "engine": settings.engine,
        "frames": settings.frames,
        "width": w,
        "height": h,
        "fps": settings.fps,
        "seconds_total": time.perf_counter() - t0,
        "seconds_render": seconds_render,
    }
    return {"files": {k: str(v) for k, v in outputs.items()}, "report": report}


@contextlib.contextmanager
def _writers(outputs: dict[str, Path], fps: int, size: tuple[int, int]):
    """Stream frames into every output at once (memory does not grow with the number of frames)."""
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(_open_writer(path, fps, size)) for path in outputs.values()]

        def write(frame: np.ndarray) -> None:
            for writer in writers:
                writer(frame)

        yield write


def gif_from_mp4(job, session) -> Path:
    raise UserInputError("GIF conversion is not available yet")


@contextlib.contextmanager
def _open_writer(path: Path, fps: int, size: tuple[int, int]):
    """A streaming encoder for one output file, written atomically; yields ``write(frame)``."""
    import av

    from stillmotion.io.atomic import atomic_path

    mp4 = path.suffix == ".mp4"
    with atomic_path(path) as tmp:
        # faststart puts the index first, so the browser can play while it loads.
        container = av.open(str(tmp), "w", options={"movflags": "+faststart"} if mp4 else {})
        try:
            if mp4:
                stream = container.add_stream("libx264", rate=fps)
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "20", "preset": "veryfast"}
            else:
                stream = container.add_stream("gif", rate=fps)
                stream.pix_fmt = "rgb8"
            stream.width, stream.height = size

            def write(frame: np.ndarray) -> None:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)

            yield write
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
