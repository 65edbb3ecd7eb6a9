"""The long-video comparison behind ``stillmotion bench-long`` and benchmarks/bench_long.py (paper Table 2).

For each method the real engine path runs (``engines.diffusion.animate_diffusion`` with
``long_method``): frames stream from the sampler through the decoder into the video file and into
per-frame metrics, so nothing here holds the whole video. Per method it records

- time: seconds spent producing frames (sampling + decoding; writing and metrics excluded);
- UNet calls and UNet frame-evaluations (frames through the UNet, both guidance branches);
- peak memory: the largest rise of the process's resident memory (CPU) or of allocated CUDA memory
  over its level when the method started;
- join smoothness: mean absolute frame difference at segment joins / median within segments (1 = a
  join looks like any other step; n/a for the window methods, which have no joins);
- join motion: optical-flow speed of the moving region at the joins / median speed elsewhere (1 = the
  motion goes on through a join; below 1 it slows there, which also lowers the frame difference);
- motion: the median of that speed over the video (px/frame): whether the method keeps things moving;
- along-arrow speed per third: the flow at the arrows' tails projected on each arrow's direction
  (px/frame; the mean over arrows and over the frame steps of each third of the video), and the slowest
  step (negative: the content moved backwards against the arrows);
- drift: mean absolute change (grey levels) of the still region (outside the mask, or where the
  motion field is zero) against the input, over the first and over the last clip-length of frames;
- adjacent-frame consistency: SSIM of frame t-1 and t (the paper's Tem-Cons uses CLIP embeddings,
  whose weights cannot be downloaded here), mean over the video and plotted against the frame index.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stillmotion.diffusion.preprocess import fit_field, fit_image, fit_mask, fit_points
from stillmotion.engines.diffusion import animate_diffusion, default_model, load_pipeline
from stillmotion.errors import UserInputError
from stillmotion.evaluation.frame_metrics import ssim
from stillmotion.evaluation.motion_metrics import seam_ratio, seam_ratio_by_stretch, still_region_drift
from stillmotion.io.video_writer import open_video_writer

TINY_RANDOM = "tiny-random"
DEFAULT_METHODS = "phased,direct,freenoise,gen-l-video"


# -- memory -------------------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release_freed_memory() -> None:
    # glibc keeps freed blocks in its arenas; hand them back so the next method starts from a clean level
    from stillmotion.engines.long_video import release_free_heap  # lazy: it loads torch

    gc.collect()
    release_free_heap()


def live_tensor_bytes(run: Callable[[], object]) -> tuple[int, int]:
    """Peak and final bytes of CPU tensors allocated while ``run()`` goes: torch's profiler's allocation
    events summed in time order (what is alive, whatever the allocator keeps resident)."""
    from torch.profiler import ProfilerActivity, profile  # lazy: the profiler loads for this measure only

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak, live


class PeakMemory:
    """Peak rise of memory while the ``with`` block runs: CUDA allocations on a GPU, else resident set
    size sampled every few milliseconds from /proc (Linux)."""

    def __init__(self, device: str = "cpu", interval: float = 0.002) -> None:
        self.device, self.interval = device, interval
        self.peak_bytes = 0
        self.start_bytes = 0

    def __enter__(self) -> PeakMemory:
        # lazy: torch takes seconds to import (start-up); only this path needs it
        import torch

        _release_freed_memory()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start_bytes = torch.cuda.memory_allocated()
            return self
        self.start_bytes = self._max = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, _rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        # lazy: torch takes seconds to import (start-up); only this path needs it
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self.start_bytes
            return
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self._max, _rss_bytes()) - self.start_bytes

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


# -- streaming metrics -----------------------------------------------------------------------------------


@dataclass
class StreamMetrics:
    """Per-frame metrics computed as frames arrive; keeps only the previous frame and per-frame numbers."""

    image: np.ndarray  # the input at the output size, uint8 (H, W, 3)
    still: np.ndarray | None  # bool (H, W): pixels that should not move
    clip_len: int
    diffs: list[float] = field(default_factory=list)  # mean |f_t - f_{t-1}|, t >= 1
    consistency: list[float] = field(default_factory=list)  # SSIM(f_{t-1}, f_t), t >= 1
    drift: list[float] = field(default_factory=list)  # still-region change against the input, per frame
    # mean optical-flow speed (px) of the moving region (outside ``still``), t >= 1; empty without one
    speeds: list[float] = field(default_factory=list)
    # arrows at the output size: (n, 4) rows x, y (tail), ux, uy (unit direction); None: no arrows
    arrows: np.ndarray | None = None
    along: list[float] = field(default_factory=list)  # flow along the arrows at their tails, t >= 1
    strip_every: int = 0  # keep every n-th frame for the comparison strip (0: none)
    strip: list[np.ndarray] = field(default_factory=list)
    _count: int = 0
    _prev: np.ndarray | None = None
    _prev_u8: np.ndarray | None = None
    _flow: Any = None

    def add(self, frame: np.ndarray) -> None:
        f = frame.astype(np.float32)
        if self._prev is not None:
            self.diffs.append(float(np.abs(f - self._prev).mean()))
            # SSIM's 11x11 window needs frames larger than that
            self.consistency.append(ssim(self._prev, f) if min(f.shape[:2]) > 11 else math.nan)
            if self.still is not None:
                if self._flow is None:
                    # lazy: numba takes about a second to import (start-up); only this path needs it
                    from stillmotion.motion.flow import FlowEstimator

                    self._flow = FlowEstimator("dis")
                flow = self._flow(self._prev_u8, frame)
                self.speeds.append(float(np.linalg.norm(flow, axis=-1)[~self.still].mean()))
                if self.arrows is not None and len(self.arrows):
                    self.along.append(along_arrow_speed(flow, self.arrows))
        if self.still is not None:
            self.drift.append(float(still_region_drift(frame[None], self.image, self.still)[0]))
        if self.strip_every and self._count % self.strip_every == 0:
            self.strip.append(frame.copy())
        self._count += 1
        self._prev, self._prev_u8 = f, frame

    def along_thirds(self) -> tuple[list[float], float]:
        """(mean along-arrow speed of the frame steps in each third of the video, slowest step); NaNs
        without arrows."""
        if len(self.along) < 3:
            return [math.nan] * 3, math.nan
        return [float(np.mean(p)) for p in np.array_split(np.array(self.along), 3)], float(min(self.along))

    def join_smoothness(self, seams: list[range]) -> float:
        """``stillmotion.evaluation.motion_metrics.seam_ratio`` on the kept differences: a seam is judged
        by its largest step, so a cross-fade cannot hide behind its first, small step."""
        return seam_ratio(self.diffs, seams)

    def join_motion(self, seams: list[range]) -> float:
        """Motion through the joins: the moving region's optical-flow speed at a seam (its slowest step)
        over the median speed of the other steps. 1 = the motion goes on through a join as anywhere
        else; below 1 it slows or stops there (a frame difference below the median can be that, too).
        NaN without a moving region or seams."""
        return seam_ratio(self.speeds, seams, pick=min) if self.speeds else math.nan

    def drift_first_last(self) -> tuple[float, float]:
        if not self.drift:
            return math.nan, math.nan
        n = min(self.clip_len, len(self.drift))
        return float(np.mean(self.drift[:n])), float(np.mean(self.drift[-n:]))


def along_arrow_speed(flow: np.ndarray, arrows: np.ndarray) -> float:
    """Mean over arrows of the flow (H, W, 2) around each tail (a box of about 2% of the frame's long
    side) projected on the arrow's unit direction: px/frame along the arrows, negative = backwards."""
    h, w = flow.shape[:2]
    r = max(1, round(0.02 * max(h, w)))
    out = []
    for x, y, ux, uy in arrows:
        cx, cy = int(round(min(max(x, 0), w - 1))), int(round(min(max(y, 0), h - 1)))
        box = flow[max(cy - r, 0) : cy + r + 1, max(cx - r, 0) : cx + r + 1].reshape(-1, 2).mean(0)
        out.append(float(box[0] * ux + box[1] * uy))
    return float(np.mean(out))


def arrow_rows(arrows: list[Any], size: tuple[int, int], width: int, height: int) -> np.ndarray | None:
    """Scene arrows -> (n, 4) tails and unit directions at the output size (fit like the image)."""
    rows = []
    for a in arrows:
        (x0, y0), (x1, y1) = fit_points(np.array([a.start, a.end]), size, width, height)
        n = math.hypot(x1 - x0, y1 - y0)
        if n > 0:
            rows.append((x0, y0, (x1 - x0) / n, (y1 - y0) / n))
    return np.array(rows) if rows else None


def steps_after_joins(
    per_step: list[float], seams: list[range], count: int
) -> tuple[list[float], list[float], int]:
    """(the first ``count`` steps of the video, the mean of the ``count`` steps that start at each join,
    position by position, the number of joins averaged). ``per_step[t]``: a figure of the step
    t -> t+1; a join's first step is the step into its first frame. With one shared frame per join
    (phased's default) position i is step i -> i+1 of segment 1 and of every later segment alike, so
    the two lists show whether the later segments move as segment 1 did at the same place (joins too
    close to the end for ``count`` steps are left out)."""
    starts = [seam.start - 1 for seam in seams if seam.start >= 1 and seam.start - 1 + count <= len(per_step)]
    first = [float(v) for v in per_step[:count]]
    if not starts or len(first) < count:
        return first, [], 0
    later = np.mean([per_step[a : a + count] for a in starts], axis=0)
    return first, [float(v) for v in later], len(starts)


def seams_of(stats: dict[str, Any]) -> list[range]:
    """The engine's seams (``stats["seams"]``: first frame and frame steps of every join, from the
    sampler's own ``LatentChunk.join``) as the frames j whose step j-1 -> j belongs to each."""
    return [range(a, a + n) for a, n in stats.get("seams", [])]


# -- the model ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def model_location(model: str | None, clip_frames: int, seed: int) -> Iterator[tuple[str | None, str]]:
    """(path for ``animate_diffusion``, label for the report). ``tiny-random`` builds the untrained tiny
    backbone with a fixed seed and saves it to a temporary folder, so it loads through the same path as a
    real model."""
    if model != TINY_RANDOM:
        if model is None:
            try:
                yield str(default_model()), f"bundled model ({default_model().name})"
            except UserInputError as exc:
                raise UserInputError(
                    f"{exc}; or pass --model {TINY_RANDOM} for the untrained tiny backbone"
                ) from exc
            return
        yield model, str(model)
        return
    # lazy: diffusers (an optional extra), numba and torch load only on this path
    from stillmotion.diffusion.pipeline import StillMotionPipeline
    from stillmotion.diffusion.tiny import tiny_components

    with tempfile.TemporaryDirectory(prefix="stillmotion-tiny-random-") as tmp:
        StillMotionPipeline(**tiny_components(seed, num_frames=clip_frames)).save_pretrained(tmp)
        yield tmp, f"tiny-random (UNTRAINED, random weights, seed {seed}, {clip_frames}-frame clips)"


# -- one method -----------------------------------------------------------------------------------------


def run_method(
    method: str,
    scene: Any,
    motion: np.ndarray | None,
    *,
    frames: int,
    model: str,
    steps: int,
    seed: int,
    size: tuple[int, int] | None,
    gamma: float,
    omega: float,
    overlap: int | None,
    device: str,
    video_path: Path | None,
    fps: float,
    progress: bool,
    strip_every: int = 0,
    **long_options: Any,
) -> dict[str, Any]:
    """Run ``method`` through the real engine; stream frames to ``video_path`` and the metrics.

    ``long_options``: further long-video options of ``animate_diffusion`` (branch_sigma, carry, stride,
    chunk_frames). ``strip_every``: keep every n-th frame in the row's ``strip`` (not in the report)."""
    # lazy: torch takes seconds to import (start-up); only this path needs it
    from stillmotion.engines.backbone_run import resolve_device

    pipe = load_pipeline(model, device)  # loaded (and cached) before the clock starts
    clip_len = int(pipe.unet.config.num_frames)
    dev = resolve_device(device)
    with PeakMemory(dev) as mem:
        it, stats = animate_diffusion_for(
            scene, motion, frames=frames, model=model, steps=steps, seed=seed, size=size,
            long_method=method, gamma=gamma, omega=omega, overlap=overlap, device=device, progress=progress,
            fps=fps, **long_options,
        )  # fmt: skip
        width, height = stats["size"]
        image = fit_image(scene.image, width, height)
        still = None
        if scene.mask is not None:
            still = ~fit_mask(scene.mask, width, height)
        elif motion is not None:
            still = np.linalg.norm(fit_field(motion, width, height), axis=-1) == 0
        if still is not None and not still.any():
            still = None
        arrows = None
        if getattr(scene, "arrows", None):
            arrows = arrow_rows(scene.arrows, (scene.width, scene.height), width, height)
        metrics = StreamMetrics(image, still, clip_len, arrows=arrows, strip_every=strip_every)
        writer = (
            open_video_writer(video_path, fps=fps) if video_path is not None else contextlib.nullcontext()
        )
        elapsed = 0.0
        count = 0
        with writer as w:
            while True:
                t0 = time.perf_counter()
                frame = next(it, None)
                elapsed += time.perf_counter() - t0
                if frame is None:
                    break
                count += 1
                if w is not None:
                    w.write(frame)
                metrics.add(frame)
    if count != frames:
        raise RuntimeError(f"{method} produced {count} frames, expected {frames}")
    drift_first, drift_last = metrics.drift_first_last()
    seams = seams_of(stats)
    thirds, slowest = metrics.along_thirds()
    return {
        "method": method,
        "frames": count,
        "time_s": elapsed,
        "unet_calls": stats["unet_calls"],
        "frame_evaluations": stats["frame_evaluations"],
        "peak_mem_mib": mem.peak_mib,
        "carry": stats.get("carry"),  # phased's carry as it ran
        "join_smoothness": metrics.join_smoothness(seams),
        "join_motion": metrics.join_motion(seams),
        # the same figures against stretches as wide as a seam (motion_metrics.seam_ratio_by_stretch)
        "join_smoothness_stretch": seam_ratio_by_stretch(metrics.diffs, seams),
        "join_motion_stretch": seam_ratio_by_stretch(metrics.speeds, seams, pick=min) if metrics.speeds
        else math.nan,
        "motion": float(np.median(metrics.speeds)) if metrics.speeds else math.nan,
        "along_thirds": thirds,
        "along_pace": thirds[1] / thirds[0] if thirds[0] > 0 else math.nan,
        "along_pace_last": thirds[2] / thirds[0] if thirds[0] > 0 else math.nan,
        "along_slowest": slowest,
        "along_per_step": metrics.along,  # step t-1 -> t at index t - 1
        "speed_per_step": metrics.speeds,  # the moving region's DIS speed, step t-1 -> t at index t - 1
        "diff_per_step": metrics.diffs,  # mean absolute frame difference, same indexing
        "ms_per_frame_eval": 1000 * elapsed / max(stats["frame_evaluations"], 1),
        "seams": [[r.start, len(r)] for r in seams],
        "strip": metrics.strip,
        "drift_first": drift_first,
        "drift_last": drift_last,
        "consistency": float(np.mean(metrics.consistency)) if metrics.consistency else math.nan,
        "consistency_per_frame": metrics.consistency,
        "clip_len": clip_len,
        "overlap": stats["overlap"],
        "size": [width, height],
    }


def animate_diffusion_for(scene: Any, motion: np.ndarray | None, **kwargs: Any):
    """``animate_diffusion`` without the still-image refinement step (the benchmark compares samplers)."""
    return animate_diffusion(scene, motion, refine=False, **kwargs)


# -- the report -----------------------------------------------------------------------------------------


def _fmt(v: float, digits: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


COLUMNS = [
    ("Method", "method"),
    ("Time (s)", "time_s"),
    ("Speed-up of phased", "speedup"),
    ("UNet calls", "unet_calls"),
    ("UNet frame-evals", "frame_evaluations"),
    ("ms / frame-eval", "ms_per_frame_eval"),
    ("Peak mem (MiB)", "peak_mem_mib"),
    ("Join smoothness", "join_smoothness"),
    ("Join motion", "join_motion"),
    ("Motion (px/frame)", "motion"),
    ("Along-arrow px/frame by third", "along_thirds"),
    ("Slowest step", "along_slowest"),
    ("Drift first clip", "drift_first"),
    ("Drift last clip", "drift_last"),
    ("Adjacent SSIM", "consistency"),
]


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """``speedup``: how many times longer the method took than phased (phased itself: 1.0)."""
    phased = next((r for r in rows if r["method"] == "phased"), None)
    for r in rows:
        r["speedup"] = r["time_s"] / phased["time_s"] if phased and phased["time_s"] > 0 else math.nan


def markdown_table(rows: list[dict[str, Any]], title: str) -> str:
    lines = [title, "", "| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = []
        for _, key in COLUMNS:
            v = r.get(key)
            if key == "method":
                cells.append(str(v))
            elif key in ("unet_calls", "frame_evaluations"):
                cells.append(str(int(v)))
            elif key == "consistency":
                cells.append(_fmt(v, 4))
            elif key == "speedup":
                cells.append(_fmt(v, 2) + "x")
            elif key == "along_thirds":
                cells.append(" / ".join(_fmt(t, 2) for t in v) if v else "n/a")
            else:
                cells.append(_fmt(v, 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys = [k for _, k in COLUMNS]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for r in rows:
            w.writerow([r.get(k) for k in keys])


def write_strip(path: Path, rows: list[dict[str, Any]], every: int) -> None:
    """The comparison strip: one row per method of every ``every``-th frame (frame 0, every, ...), the
    method and frame numbers written on it, frames enlarged (nearest) to at least 96 px high. PNG."""
    rows = [r for r in rows if r.get("strip")]
    if not rows:
        return
    h, w = rows[0]["strip"][0].shape[:2]
    k = max(1, math.ceil(96 / h))
    label_w, head = 110, 18
    cols = max(len(r["strip"]) for r in rows)
    canvas = np.full((head + len(rows) * (h * k + 4), label_w + cols * (w * k + 2), 3), 255, np.uint8)
    for c in range(cols):
        cv2.putText(canvas, f"{c * every}", (label_w + c * (w * k + 2) + 2, head - 5),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
    for i, r in enumerate(rows):
        y = head + i * (h * k + 4)
        cv2.putText(canvas, r["method"], (4, y + h * k // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0),
                    1, cv2.LINE_AA)  # fmt: skip
        for c, frame in enumerate(r["strip"]):
            x = label_w + c * (w * k + 2)
            canvas[y : y + h * k, x : x + w * k] = np.repeat(np.repeat(frame, k, 0), k, 1)
    ok, png = cv2.imencode(".png", canvas[..., ::-1])
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    path.write_bytes(png.tobytes())


def plot_consistency(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    # lazy: matplotlib is an optional extra, imported only on this path
    import matplotlib

    matplotlib.use("Agg")
    # lazy: matplotlib is an optional extra, imported only on this path
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    for r in rows:
        ys = r["consistency_per_frame"]
        ax.plot(range(1, len(ys) + 1), ys, label=r["method"], linewidth=1.2)
    ax.set_xlabel("frame index t")
    ax.set_ylabel("SSIM(frame t-1, frame t)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_bench_long(
    scene: Any,
    motion: np.ndarray | None,
    *,
    out_dir: Path | None,
    frames: int,
    methods: list[str],
    model: str | None,
    steps: int,
    seed: int,
    size: tuple[int, int] | None,
    gamma: float = 0.8,
    omega: float = 0.2,
    overlap: int | None = None,
    clip_frames: int = 25,
    device: str = "auto",
    fps: float = 8.0,
    progress: bool = False,
    strip_every: int = 10,
    **long_options: Any,
) -> tuple[list[dict[str, Any]], str]:
    """Every method on the same backbone, input and seed. Writes (when ``out_dir``) one video per method,
    ``table.md``, ``table.csv``, ``consistency.png``, ``strip.png`` (every ``strip_every``-th frame of
    each method) and ``report.json``; returns (rows, backbone label). ``long_options``: branch_sigma,
    carry, stride, chunk_frames (see ``animate_diffusion``)."""
    # lazy: torch takes seconds to import (start-up); only this path needs it
    from stillmotion.sampling.long import LONG_METHODS

    for m in methods:
        if m not in LONG_METHODS:
            raise UserInputError(f"--methods: unknown method {m!r}; choose from {', '.join(LONG_METHODS)}")
    rows = []
    with model_location(model, clip_frames, seed) as (path, label):
        # warm-up: the first UNet/VAE/CLIP calls pay one-off set-up costs no method should be charged for
        warm, _ = animate_diffusion_for(scene, motion, frames=2, model=path, steps=1, seed=seed, size=size,
                                        device=device)  # fmt: skip
        for _ in warm:
            pass
        for m in methods:
            video = None if out_dir is None else out_dir / f"{m}.mp4"
            rows.append(
                run_method(
                    m,
                    scene,
                    motion,
                    frames=frames,
                    model=path,
                    steps=steps,
                    seed=seed,
                    size=size,
                    gamma=gamma,
                    omega=omega,
                    overlap=overlap,
                    device=device,
                    video_path=video,
                    fps=fps,
                    progress=progress,
                    strip_every=strip_every if out_dir is not None else 0,
                    **long_options,
                )  # fmt: skip
            )
    add_speedups(rows)
    if out_dir is not None:
        used_overlap = rows[0]["overlap"] if rows else overlap
        branch = (f"branch sigma {long_options['branch_sigma']}" if long_options.get("branch_sigma")
                  else f"gamma {gamma}")  # fmt: skip
        extra = "".join(f", {k} {v}" for k, v in long_options.items()
                        if v is not None and k != "branch_sigma")  # fmt: skip
        title = (
            f"Longer animation, {frames} frames, {steps} steps, seed {seed}, backbone: {label}; "
            f"{branch}, omega {omega}, overlap {used_overlap}{extra}"
        )
        (out_dir / "table.md").write_text(markdown_table(rows, f"**{title}**"))
        write_csv(out_dir / "table.csv", rows)
        plot_consistency(out_dir / "consistency.png", rows, title)
        write_strip(out_dir / "strip.png", rows, strip_every)
        report = {"backbone": label, "frames": frames, "steps": steps, "seed": seed, "gamma": gamma,
                  "omega": omega, "overlap": used_overlap, **long_options,
                  "methods": [{k: v for k, v in r.items() if k != "strip"} for r in rows]}  # fmt: skip
        (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=float))
    return rows, label
