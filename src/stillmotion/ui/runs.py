"""What a queued job does: the photo, arrows and mask of a session -> a video file in its folder.

The page's settings map one to one onto ``stillmotion animate`` options, and ``cli_command`` prints
the command that replays a drawing from the terminal. Engines are imported when a job runs, so the
server starts quickly and says which engine is missing instead of failing to start.
"""

from __future__ import annotations

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


def render(
    job, session, image: np.ndarray, arrows: list[Arrow], mask: np.ndarray | None, settings: Settings
) -> dict:
    """Run one job; write ``<job id>.mp4`` (and ``.gif`` for full runs) in the session folder."""
    raise UserInputError(
        engine_status(settings.model_dir)[settings.engine]["reason"] or "engine not wired yet"
    )


def gif_from_mp4(job, session) -> Path:
    raise UserInputError("GIF conversion is not available yet")


def _now() -> float:
    return time.perf_counter()
