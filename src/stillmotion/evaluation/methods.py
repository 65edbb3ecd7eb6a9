"""The methods the benchmark compares, each behind one small adapter over the project's engines.

Every adapter turns a :class:`~stillmotion.evaluation.conditions.Condition` into N uint8 frames
(frame 0 is the input image's position in time) and says which motion it was asked for. A method
whose engine or model is not available reports why (:attr:`Method.unavailable`) and the run skips it.

Rows, as in the paper's tables:

- ``warp``: the warp engine (Eulerian motion + softmax splatting; the paper's "Animating-pictures"
  row), given the static field (the clip's mean flow, or the arrows' dense field), forward
  animation (no loop), the mask holding the rest still.
- ``diffusion`` ("Ours"): the motion-conditioned diffusion pipeline with the per-frame flows
  (``flow``) or the arrows' dense field through the refinement model T (``arrows``), the strength
  M_s of that motion, and the mask.
- ``no-refiner`` ("w/o T"): the same with T switched off. With the ``flow`` condition T has nothing to
  refine (it refines single arrow fields), so this row equals ``diffusion`` there.
- ``no-motion`` ("w/o motion fields"): no motion field at all (the motion cross-attention gets no
  features; the strength term, derived from the field, is absent too).
- ``no-strength`` ("w/o motion strength"): the motion field but no strength term.
- ``svd``: stock Stable Video Diffusion from ``--svd DIR`` (the pipeline's zero-initialised motion
  modules and no motion input reproduce it exactly).
- ``phased``, ``direct``, ``freenoise``, ``gen-l-video``: the long-video samplers (Table 2) on the
  diffusion model, through ``stillmotion.engines.long_video.stream_long_video`` (what the diffusion engine
  streams for long videos; it also marks where separately sampled segments join).

The short rows call the pipeline's ``prepare`` / sampler / ``decode`` directly, as the diffusion engine
does for one clip, because the ablations switch parts off between those steps.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stillmotion.evaluation.conditions import Condition

SHORT_DIFFUSION = ("diffusion", "no-refiner", "no-motion", "no-strength", "svd")
LONG_METHODS = ("phased", "direct", "freenoise", "gen-l-video")
ALL_METHODS = ("warp", *SHORT_DIFFUSION, *LONG_METHODS)
LABELS = {
    "warp": "Warp engine (Animating-pictures)",
    "diffusion": "Ours",
    "no-refiner": "Ours (w/o T)",
    "no-motion": "Ours (w/o motion fields)",
    "no-strength": "Ours (w/o motion strength)",
    "svd": "SVD (stock)",
    "phased": "Ours (phased)",
    "direct": "Direct",
    "freenoise": "FreeNoise",
    "gen-l-video": "Gen-L-Video",
}


@dataclass
class Generated:
    frames: np.ndarray  # (N, H, W, 3) uint8
    seconds: float
    requested: np.ndarray | None  # the motion asked for: (H, W, 2) or (N-1, H, W, 2); None = no motion
    joins: list[int] = field(default_factory=list)  # first frame of each later segment
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Method:
    name: str
    run: Callable[[Condition, int, int, int], Generated] | None
    unavailable: str | None = None  # why it cannot run here
    long_only: bool = False  # only for protocols longer than the model's clip
    short_only: bool = False

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    def applies_to(self, n_frames: int, clip_len: int) -> bool:
        if self.long_only:
            return n_frames > clip_len
        if self.short_only:
            return n_frames <= clip_len
        return True


def _fit_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


# ---------------------------------------------------------------------------------------------- warp


def warp_method() -> Method:
    try:
        # lazy, guarded: a part missing from this installation is reported, not an import error
        from stillmotion.engines.warp import warp_frames
    except ImportError as exc:
        return Method("warp", None, f"warp engine not installed ({exc})")

    # The engine compiles its kernels on first use: do it here so no row's time includes it.
    tiny = np.zeros((8, 8, 3), np.uint8)
    list(warp_frames(tiny, np.full((8, 8, 2), 0.5, np.float32), frames=3, loop=True))
    list(warp_frames(tiny, np.full((8, 8, 2), 0.5, np.float32), frames=3, loop=False))

    def run(cond: Condition, n: int, seed: int, steps: int) -> Generated:
        t0 = time.perf_counter()
        frames = np.stack(list(warp_frames(cond.image, cond.field, frames=n, loop=False, mask=cond.mask)))
        return Generated(frames, time.perf_counter() - t0, cond.field, info={"loop": False})

    return Method("warp", run)


# ----------------------------------------------------------------------------------------- diffusion


@dataclass
class DiffusionModels:
    """Pipelines loaded once per run (lazily), with the reason when one cannot be had."""

    model: str | None = None
    svd: str | None = None
    device: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict)

    def pipeline(self, which: str):
        if which in self._cache:
            return self._cache[which]
        try:
            pipe = self._load(which)
        except Exception as exc:  # noqa: BLE001 - any load failure becomes a skip reason
            pipe = exc
        self._cache[which] = pipe
        return pipe

    def _load(self, which: str):
        # lazy: torch takes seconds to import (start-up); only this path needs it
        import torch

        from stillmotion.diffusion.pipeline import StillMotionPipeline

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if which == "svd":
            if self.svd is None:
                raise LookupError("stock SVD needs --svd DIR")
            pipe = StillMotionPipeline.from_svd(self.svd)
        else:
            path = self.model or default_model_dir()
            if path is None:
                raise LookupError(
                    "no diffusion model: pass --model DIR (no embedded default model is installed)"
                )
            try:  # the diffusion engine's loader picks the dtype for the device (fp16 on CUDA)
                # lazy, guarded: a part missing from this installation is reported, not an import error
                from stillmotion.engines.diffusion import load_pipeline
            except ImportError:
                pipe = StillMotionPipeline.from_pretrained(path)
            else:
                return load_pipeline(path, device=device)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)

    def default_steps(self) -> int:
        """Sampling steps the model folder recommends (its stillmotion_defaults.json), else 25."""
        folder = self.model or default_model_dir()
        path = Path(folder) / "stillmotion_defaults.json" if folder else None
        if path is not None and path.is_file():
            try:
                return int(json.loads(path.read_text()).get("steps", 25))
            except (ValueError, TypeError, AttributeError):
                return 25
        return 25

    def clip_len(self) -> int:
        pipe = self.pipeline("model")
        return int(pipe.unet.config.num_frames) if not isinstance(pipe, Exception) else 25


def default_model_dir() -> str | None:
    """The embedded default model's folder, when the package ships one (issue 7)."""
    for mod, attr in (("stillmotion.diffusion.default_model", "default_model_dir"),
                      ("stillmotion.engines.diffusion", "default_model_dir")):  # fmt: skip
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError):
            continue
        path = fn()
        if path is not None and Path(path).exists():
            return str(path)
    return None


def _short_diffusion(name: str, models: DiffusionModels) -> Method:
    which = "svd" if name == "svd" else "model"
    pipe = models.pipeline(which)
    if isinstance(pipe, Exception):
        return Method(name, None, f"{type(pipe).__name__}: {pipe}", short_only=True)

    def run(cond: Condition, n: int, seed: int, steps: int) -> Generated:
        # lazy: torch takes seconds to import (start-up); only this path needs it
        import torch

        from stillmotion.sampling.base import sample_euler

        h, w = cond.image.shape[:2]
        arrows = cond.kind == "arrows"
        motion = None if name in ("no-motion", "svd") else (cond.field if arrows else cond.flows[: n - 1])
        refine = arrows and name == "diffusion"
        generator = torch.Generator(device="cpu").manual_seed(seed)
        t0 = time.perf_counter()
        prepared = pipe.prepare(cond.image, motion, mask=None if name == "svd" else cond.mask, num_frames=n,
                                width=w, height=h, refine=refine, generator=generator)  # fmt: skip
        den = prepared.denoiser
        if name == "no-strength":
            den.strength = None  # the strength term is added only when a strength is set
        sigmas = den.set_schedule(steps)
        x = pipe.initial_latents(den, generator=generator)
        x = sample_euler(den, x, sigmas)
        frames = np.concatenate(list(pipe.decode(prepared, x)), axis=1)[0]
        out = _fit_frames((frames * 255 + 0.5).clip(0, 255).astype(np.uint8), w, h)
        info = {"steps": steps, "unet_calls": den.unet_calls, "frame_evaluations": den.frame_evaluations,
                "refine": refine}  # fmt: skip
        return Generated(out, time.perf_counter() - t0, motion, info=info)

    return Method(name, run, short_only=True)


def _long_diffusion(name: str, models: DiffusionModels) -> Method:
    try:
        # lazy, guarded: a part missing from this installation is reported, not an import error
        from stillmotion.engines.long_video import stream_long_video
        from stillmotion.sampling.long import LongOptions
    except ImportError as exc:
        return Method(name, None, f"long-video samplers not installed ({exc})", long_only=True)
    pipe = models.pipeline("model")
    if isinstance(pipe, Exception):
        return Method(name, None, f"{type(pipe).__name__}: {pipe}", long_only=True)

    def run(cond: Condition, n: int, seed: int, steps: int) -> Generated:
        # lazy: torch takes seconds to import (start-up); only this path needs it
        import torch

        h, w = cond.image.shape[:2]
        arrows = cond.kind == "arrows"
        motion = cond.field if arrows else cond.flows[: n - 1]
        generator = torch.Generator(device="cpu").manual_seed(seed)
        t0 = time.perf_counter()
        prepared = pipe.prepare(cond.image, motion, mask=cond.mask, num_frames=n, width=w, height=h,
                                refine=arrows, generator=generator)  # fmt: skip
        den = prepared.denoiser
        chunks, joins, count = [], [], 0
        # The samplers' own entry point (the one the diffusion engine streams): it also says where
        # each separately sampled segment starts, which join smoothness needs.
        options = LongOptions(method=name)
        for chunk, join in stream_long_video(pipe, prepared, options, steps=steps, seed=seed):
            if join and count > 0:
                joins.append(count)
            frames = (chunk[0] * 255 + 0.5).clip(0, 255).astype(np.uint8)
            chunks.append(frames)
            count += len(frames)
        out = _fit_frames(np.concatenate(chunks), w, h)
        info = {"steps": steps, "unet_calls": den.unet_calls, "frame_evaluations": den.frame_evaluations,
                "clip_len": den.clip_frames}  # fmt: skip
        return Generated(out, time.perf_counter() - t0, motion, joins, info)

    return Method(name, run, long_only=True)


def build_methods(names: list[str], models: DiffusionModels) -> list[Method]:
    out = []
    for name in names:
        if name == "warp":
            out.append(warp_method())
        elif name in SHORT_DIFFUSION:
            out.append(_short_diffusion(name, models))
        elif name in LONG_METHODS:
            out.append(_long_diffusion(name, models))
        else:
            raise ValueError(f"unknown method {name!r}")
    return out
