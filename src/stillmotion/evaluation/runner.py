"""The benchmark loop: real videos -> conditions -> every method -> metrics -> merged results.

For each real video, for each protocol N (16 and 125 frames by default, truncated from the start;
a shorter video is scored on all its frames and the row says so), the clip is brought to the
working size, its flows are measured, the condition is built (:mod:`conditions`), every method that
applies generates a clip from frame 0 with the same seed, and the clip is scored against the real
one. Frame 0 is the given input for every method, so the frame metrics (PSNR, SSIM, LPIPS) average
frames 1..N-1.

Several processes (``accelerate launch``) split the video list; each writes its rows to a part file
in a staging folder beside the output, and the main process merges the parts, computes FVD over the
whole sets and writes the reports (:mod:`report`). The output folder appears at once, complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch

from stillmotion.errors import UserInputError
from stillmotion.evaluation import frame_metrics as fm
from stillmotion.evaluation import motion_metrics as mm
from stillmotion.evaluation.clip_consistency import CLIPConsistency
from stillmotion.evaluation.conditions import CONDITIONS, condition_from_clip
from stillmotion.evaluation.i3d import I3DFeatures, find_i3d
from stillmotion.evaluation.lpips import LPIPSMetric
from stillmotion.evaluation.methods import ALL_METHODS, DiffusionModels, Generated, Method, build_methods
from stillmotion.evaluation.report import write_reports
from stillmotion.evaluation.weights import MetricUnavailable
from stillmotion.io.atomic import atomic_path
from stillmotion.io.outputs import check_outputs
from stillmotion.io.video_reader import is_image_file, is_video_file, open_frames
from stillmotion.progress import progress_bar

PSNR_CAP = 100.0  # dB; identical frames would give inf and poison the mean
SIZE_MULTIPLE = 16
DEFAULT_SIZE = 256  # working resolution's longer side when no diffusion model sets one


@dataclass
class EvalOptions:
    videos: list[Path]
    out: Path
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    frames: list[int] = field(default_factory=lambda: [16, 125])
    condition: str = "flow"
    model: str | None = None
    svd: str | None = None
    i3d: str | None = None
    lpips_dir: str | None = None
    clip: str | None = None
    limit: int | None = None
    steps: int | None = None  # None: the model's default (stillmotion_defaults.json), else 25
    seed: int = 0
    size: int | None = None  # longer side of the working resolution (None: the model's, else 256)
    arrows: int = 5
    device: str | None = None
    progress: bool = False
    overwrite: bool = False  # replace an existing output folder stillmotion did not write

    def check(self) -> None:
        if self.condition not in CONDITIONS:
            raise UserInputError(
                f"--condition must be one of {', '.join(CONDITIONS)}, got {self.condition!r}"
            )
        bad = [m for m in self.methods if m not in ALL_METHODS]
        if bad:
            raise UserInputError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(ALL_METHODS)}")
        if not self.methods:
            raise UserInputError("--methods is empty")
        if not self.frames or any(n < 2 for n in self.frames):
            raise UserInputError(f"--frames must be frame counts >= 2, got {self.frames}")
        if self.steps is not None and self.steps < 1:
            raise UserInputError(f"--steps must be >= 1, got {self.steps}")
        if self.size is not None and self.size < 32:
            raise UserInputError(f"--size must be >= 32 pixels, got {self.size}")
        if self.limit is not None and self.limit < 1:
            raise UserInputError(f"--limit must be >= 1, got {self.limit}")
        # A mistyped model folder would silently drop the main rows: refuse it. (Metric weight paths
        # are looked up leniently: a missing one is reported as "not computed".)
        for flag, value in (("--model", self.model), ("--svd", self.svd)):
            if value is not None and not Path(value).exists() and _looks_like_path(value):
                raise UserInputError(f"{flag} {value}: no such folder")


def _looks_like_path(value: str) -> bool:
    # "org/name" may be a Hugging Face hub id (resolved from the local cache); anything else is a path.
    return value.startswith((".", "/", "~")) or value.count("/") != 1


# ----------------------------------------------------------------------------------------- inputs


def discover_videos(paths: list[Path], limit: int | None = None) -> list[Path]:
    """Video files and frame folders under ``paths`` (a folder holding images is one video)."""
    found: list[Path] = []

    def visit(p: Path) -> None:
        if p.is_file():
            if is_video_file(p):
                found.append(p)
            return
        if not p.is_dir():
            return
        children = sorted(c for c in p.iterdir() if not c.name.startswith("."))
        if any(c.is_file() and is_image_file(c) for c in children):
            found.append(p)
            return
        for c in children:
            visit(c)

    for p in paths:
        if not p.exists():
            raise UserInputError(f"video path {p} does not exist")
        if p.is_file() and not is_video_file(p):
            raise UserInputError(f"{p} is not a video file (mp4, avi, gif, ...) or a folder of frames")
        visit(p)
    if not found:
        raise UserInputError(
            f"no videos (video files or folders of frames) under {', '.join(map(str, paths))}"
        )
    return found[:limit] if limit else found


def working_size(width: int, height: int, long_side: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """(W, H) with the longer side about ``long_side``, both multiples of ``multiple``, aspect kept."""
    scale = long_side / max(width, height)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    return w, h


def fit_frame(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to cover (width, height) and center-crop (no stretching)."""
    h, w = frame.shape[:2]
    s = max(width / w, height / h)
    rw, rh = max(width, int(round(w * s))), max(height, int(round(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    r = cv2.resize(frame, (rw, rh), interpolation=interp)
    x0, y0 = (rw - width) // 2, (rh - height) // 2
    return np.ascontiguousarray(r[y0 : y0 + height, x0 : x0 + width])


def read_clip(path: Path, max_frames: int, long_side: int, multiple: int) -> tuple[np.ndarray, float]:
    """First ``max_frames`` frames of a video at the working size, and its frame rate."""
    src = open_frames(path, max_frames=max_frames)
    w, h = working_size(src.width, src.height, long_side, multiple)
    frames = np.stack([fit_frame(f, w, h) for f in src])
    if len(frames) < 2:
        raise UserInputError(f"{path} has {len(frames)} frame(s); at least 2 are needed")
    return frames, float(src.fps)


def video_id(path: Path, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c in "-_" else "_" for c in path.stem) or "video"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


# ---------------------------------------------------------------------------------------- metrics


class LearnedMetrics:
    """I3D, LPIPS and CLIP loaded once per process; a missing one is recorded, not raised."""

    def __init__(self, opts: EvalOptions) -> None:
        self.not_computed: dict[str, dict[str, Any]] = {}
        self.i3d = self._try("FVD", lambda: _load_i3d(opts))
        self.lpips = self._try("LPIPS", lambda: _load_lpips(opts))
        self.clip = self._try("Tem-Cons", lambda: _load_clip(opts))

    def _try(self, name: str, fn):
        try:
            return fn()
        except MetricUnavailable as exc:
            self.not_computed[name] = {"reason": exc.detail, "looked_in": exc.looked_in}
        except (ValueError, RuntimeError, OSError) as exc:
            self.not_computed[name] = {"reason": f"could not load: {str(exc)[:300]}", "looked_in": []}
        return None


def _load_i3d(opts: EvalOptions):
    return I3DFeatures(find_i3d(opts.i3d), device=opts.device)


def _load_lpips(opts: EvalOptions):
    return LPIPSMetric(opts.lpips_dir, device=opts.device)


def _load_clip(opts: EvalOptions):
    source = opts.clip
    if source is None and opts.svd is not None and (Path(opts.svd) / "image_encoder").is_dir():
        source = str(Path(opts.svd) / "image_encoder")  # SVD ships a CLIP vision model with projection
    return CLIPConsistency(source, device=opts.device)


def _mean(a: np.ndarray | list) -> float | None:
    a = np.asarray(a, np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def _curve(a: np.ndarray | None) -> list[float | None]:
    if a is None:
        return []
    return [float(v) if np.isfinite(v) else None for v in np.asarray(a, np.float64)]


def score_clip(
    gen: np.ndarray,
    real: np.ndarray,
    image: np.ndarray,
    still: np.ndarray,
    requested: np.ndarray | None,
    region: np.ndarray,
    joins: list[int],
    learned: LearnedMetrics,
) -> tuple[dict[str, float | None], dict[str, list]]:
    """Scalar metrics and per-frame curves of a generated clip against the real clip."""
    curves: dict[str, np.ndarray | None] = {}
    n = len(gen)
    if n > 1:
        curves["psnr"] = np.concatenate(
            [[np.nan], np.minimum(fm.psnr_per_frame(gen[1:], real[1:]), PSNR_CAP)]
        )
        curves["ssim"] = np.concatenate([[np.nan], fm.ssim_per_frame(gen[1:], real[1:])])
        if learned.lpips is not None:
            curves["lpips"] = np.concatenate([[np.nan], learned.lpips.per_frame(gen[1:], real[1:])])
    curves.update(temporal_curves(gen, image, still, learned))
    fw, bw = mm.video_flows(gen), mm.video_flows(gen, backward=True)
    curves["warp_error"] = mm.warp_error_per_frame(gen, fw, bw)
    if requested is not None and n > 1:
        fid = mm.motion_fidelity(requested, fw, region=region)
        curves["epe"], curves["cosine"] = fid.epe_per_frame, fid.cosine_per_frame
    scalars = {k: _mean(v) for k, v in curves.items() if v is not None}
    scalars["join"] = _finite(mm.join_smoothness(gen, joins)) if joins else None
    return scalars, {k: _curve(v) for k, v in curves.items()}


def temporal_curves(
    frames: np.ndarray, image: np.ndarray, still: np.ndarray, learned: LearnedMetrics
) -> dict:
    """Metrics of one clip alone (also computed for the real clip, as the reference row)."""
    out: dict[str, np.ndarray] = {
        "adjacent_mad": fm.adjacent_mean_abs_diff(frames),
        "adjacent_ssim": fm.adjacent_ssim(frames),
        "drift": mm.still_region_drift(frames, image, still),
    }
    if learned.clip is not None:
        out["tem_cons"] = learned.clip.per_frame(frames)
    return out


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


# ------------------------------------------------------------------------------------------- runs


def staging_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.eval-staging"


def write_media(path: Path, frames: np.ndarray, fps: float) -> str:
    """Write a clip for the HTML page (the project's video writer when present, else H.264 via PyAV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # lazy, guarded: a part missing from this installation is reported, not an import error
        from stillmotion.io.video_writer import write_video
    except ImportError:
        write_video = None
    if write_video is not None:
        write_video(path, iter(frames), fps=fps)
    else:
        _write_mp4(path, frames, fps)
    return str(path)


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    with atomic_path(path) as tmp, av.open(str(tmp), "w") as box:
        stream = box.add_stream("libx264", rate=max(1, int(round(fps))))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20"}
        for f in frames:
            box.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        box.mux(stream.encode())


def evaluate_videos(
    videos: list[tuple[str, Path]], opts: EvalOptions, media_root: Path, *, rank: int = 0
) -> dict[str, Any]:
    """Run every method on ``videos`` (id, path); return this process's part (rows, skips, notes)."""
    models = DiffusionModels(opts.model, opts.svd, opts.device)
    methods = build_methods(opts.methods, models)
    runnable = [m for m in methods if m.run is not None]
    skipped = {m.name: m.unavailable for m in methods if m.run is None}
    clip_len = models.clip_len() if any(m.name != "warp" for m in runnable) else 25
    learned = LearnedMetrics(opts)
    multiple, model_side = _model_geometry(models, runnable)
    long_side = opts.size or model_side or DEFAULT_SIZE
    steps = opts.steps or models.default_steps()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    total = len(videos) * sum(1 + sum(m.applies_to(n, clip_len) for m in runnable) for n in opts.frames)
    with progress_bar(total=total, desc=f"eval[{rank}]", enabled=opts.progress, unit="clip") as bar:
        for vid, path in videos:
            real_all, fps = read_clip(path, max(opts.frames), long_side, multiple)
            flows_all = mm.video_flows(real_all)
            for n_req in opts.frames:
                real = real_all[:n_req]
                n = len(real)
                clipped = n < n_req
                if clipped:
                    notes.append(f"{vid}: {n} frames, shorter than the {n_req}-frame protocol: scored on {n}")
                cond = condition_from_clip(real, flows_all[: n - 1], opts.condition, opts.arrows)
                still = ~cond.mask
                region = mm.motion_region(cond.field, mask=cond.mask)
                base = {"video": vid, "source": str(path), "process": rank, "protocol": n_req, "frames": n,
                        "clipped": clipped,
                        "width": real.shape[2], "height": real.shape[1], "condition": opts.condition,
                        "arrows": [list(map(list, a.points)) for a in cond.arrows]}  # fmt: skip
                media = media_root / vid / str(n_req)
                write_media(media / "real.mp4", real, fps)
                cv2.imwrite(str(media / "input.png"), cv2.cvtColor(cond.image, cv2.COLOR_RGB2BGR))
                real_curves = temporal_curves(real, cond.image, still, learned)
                real_bw = mm.video_flows(real, backward=True)
                real_curves["warp_error"] = mm.warp_error_per_frame(real, flows_all[: n - 1], real_bw)
                real_scalars = {k: _mean(v) for k, v in real_curves.items()}
                rows.append({**base, "method": "real", "label": "Real video", "seconds": None, **real_scalars,
                             "curves": {k: _curve(v) for k, v in real_curves.items()},
                             "i3d": _i3d(learned, real), "media": f"{vid}/{n_req}/real.mp4"})  # fmt: skip
                bar.update(1)
                for m in runnable:
                    if not m.applies_to(n, clip_len):
                        continue
                    rows.append(
                        _run_one(m, cond, real, n, opts, learned, still, region, base, media, fps, steps)
                    )
                    bar.update(1)
    return {"rank": rank, "rows": rows, "skipped": skipped, "notes": notes,
            "not_computed": learned.not_computed, "clip_len": clip_len,
            "working_size": f"longer side {long_side} px, multiple of {multiple}", "steps": steps,
            "flow_method": mm.flow_method()}  # fmt: skip


def _model_geometry(models: DiffusionModels, runnable: list[Method]) -> tuple[int, int | None]:
    """(size multiple, the model's default longer side) of the diffusion model in use, if any."""
    if any(m.name != "warp" for m in runnable):
        pipe = models.pipeline("model")
        if isinstance(pipe, Exception):
            pipe = models.pipeline("svd")
        if not isinstance(pipe, Exception):
            return max(SIZE_MULTIPLE, int(pipe.size_multiple)), int(max(pipe.default_size(512, 512)))
    return SIZE_MULTIPLE, None


def _run_one(
    m: Method, cond, real, n, opts, learned, still, region, base, media, fps, steps
) -> dict[str, Any]:
    row = {**base, "method": m.name, "label": m.label}
    try:
        g: Generated = m.run(cond, n, opts.seed, steps)
    except Exception as exc:  # noqa: BLE001 - one failing method must not stop the benchmark
        return {**row, "error": f"{type(exc).__name__}: {str(exc)[:300]}", "curves": {}}
    gen = g.frames[:n]
    if len(gen) < n:
        row["note"] = f"generated {len(gen)} of {n} frames"
        real = real[: len(gen)]
    scalars, curves = score_clip(gen, real, cond.image, still, g.requested, region, g.joins, learned)
    write_media(media / f"{m.name}.mp4", gen, fps)
    info = {k: v for k, v in g.info.items() if isinstance(v, int | float | str | bool)}
    return {**row, "seconds": g.seconds, **scalars, "curves": curves, "i3d": _i3d(learned, gen),
            "info": info, "media": f"{base['video']}/{base['protocol']}/{m.name}.mp4"}  # fmt: skip


def _i3d(learned: LearnedMetrics, frames: np.ndarray) -> list[float] | None:
    if learned.i3d is None:
        return None
    return learned.i3d.features(frames[None])[0].astype(float).tolist()


# -------------------------------------------------------------------------------------- top level


def run(opts: EvalOptions) -> Path:
    """Run the benchmark (one process, or one of several under ``accelerate launch``); return the output."""
    opts.check()

    check_outputs([("-o", opts.out, "folder")], [("VIDEO", p) for p in opts.videos], overwrite=opts.overwrite)
    state = partial_state()
    if opts.device is None and state.num_processes > 1:
        opts.device = str(state.device)  # one GPU per process under accelerate launch
    videos = discover_videos(opts.videos, opts.limit)

    for p in videos:  # fail on an unreadable input now, before any model is loaded
        open_frames(p, max_frames=1)
    taken: set[str] = set()
    ids = [(video_id(p, taken), p) for p in videos]
    stage = staging_dir(opts.out)
    if state.is_main_process:
        shutil.rmtree(stage, ignore_errors=True)
        (stage / "parts").mkdir(parents=True)
    state.wait_for_everyone()
    # A failure in one process must not leave the others waiting: every process writes a part (rows,
    # or the error), the main process cleans up, and the errors are raised after the last barrier.
    failure: BaseException | None = None
    try:
        with state.split_between_processes(ids) as mine:
            part = evaluate_videos(list(mine), opts, stage / "media", rank=state.process_index)
    except Exception as exc:  # noqa: BLE001 - re-raised below, after the other processes are released
        failure = exc
        user_error = isinstance(exc, UserInputError)
        part = {"rank": state.process_index, "failed": f"{exc}", "user_error": user_error}
    part_file = stage / "parts" / f"part-{state.process_index:03d}.json"
    tmp = part_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(part))
    os.replace(tmp, part_file)
    state.wait_for_everyone()
    error: BaseException | None = None
    if state.is_main_process:
        try:
            parts = [json.loads(p.read_text()) for p in sorted((stage / "parts").glob("part-*.json"))]
            bad = [p for p in parts if "failed" in p]
            if bad:
                msg = "; ".join(f"process {p['rank']}: {p['failed']}" for p in bad)
                error = UserInputError(msg) if all(p["user_error"] for p in bad) else RuntimeError(msg)
            else:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    write_reports(opts, parts, stage / "media", world_size=state.num_processes)
                for w in caught:
                    if opts.progress:
                        print(f"warning: {w.message}", flush=True)
        except Exception as exc:  # noqa: BLE001 - raised below, after the barrier
            error = exc
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    state.wait_for_everyone()
    if failure is not None:
        raise failure
    if error is not None:
        raise error
    return opts.out


def partial_state():
    """accelerate's process state. Without CUDA (or with ACCELERATE_USE_CPU) the processes that
    ``accelerate launch --multi_gpu`` / ``torchrun`` start join one CPU (gloo) group."""
    # lazy: accelerate is an optional extra, imported only on this path
    from accelerate import PartialState

    env_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return PartialState(cpu=env_cpu or not torch.cuda.is_available())


