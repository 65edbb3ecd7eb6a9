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
- drift: mean absolute change (grey levels) of the still region (outside the mask, or where the
  motion field is zero) against the input, over the first and over the last clip-length of frames;
- adjacent-frame consistency: SSIM of frame t-1 and t (the paper's Tem-Cons uses CLIP embeddings,
  whose weights cannot be downloaded here), mean over the video and plotted against the frame index.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import gc
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stillmotion.errors import UserInputError

TINY_RANDOM = "tiny-random"
DEFAULT_METHODS = "phased,direct,freenoise,gen-l-video"


# -- memory -------------------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release_freed_memory() -> None:
    # glibc keeps freed blocks in its arenas; hand them back so the next method starts from a clean level
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak rise of memory while the ``with`` block runs: CUDA allocations on a GPU, else resident set
    size sampled every few milliseconds from /proc (Linux)."""

    def __init__(self, device: str = "cpu", interval: float = 0.002) -> None:
        self.device, self.interval = device, interval
        self.peak_bytes = 0
        self.start_bytes = 0

    def __enter__(self) -> PeakMemory:
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
    _prev: np.ndarray | None = None
    _prev_u8: np.ndarray | None = None
    _flow: Any = None

    def add(self, frame: np.ndarray) -> None:
        from stillmotion.evaluation.frame_metrics import ssim
        from stillmotion.evaluation.motion_metrics import still_region_drift

        f = frame.astype(np.float32)
        if self._prev is not None:
            self.diffs.append(float(np.abs(f - self._prev).mean()))
            # SSIM's 11x11 window needs frames larger than that
            self.consistency.append(ssim(self._prev, f) if min(f.shape[:2]) > 11 else math.nan)
            if self.still is not None:
                if self._flow is None:
                    from stillmotion.motion.flow import FlowEstimator

                    self._flow = FlowEstimator("dis")
                flow = self._flow(self._prev_u8, frame)
                self.speeds.append(float(np.linalg.norm(flow, axis=-1)[~self.still].mean()))
        if self.still is not None:
            self.drift.append(float(still_region_drift(frame[None], self.image, self.still)[0]))
        self._prev, self._prev_u8 = f, frame

    def join_smoothness(self, seams: list[range]) -> float:
        """``stillmotion.evaluation.motion_metrics.seam_ratio`` on the kept differences: a seam is judged
        by its largest step, so a cross-fade cannot hide behind its first, small step."""
        from stillmotion.evaluation.motion_metrics import seam_ratio

        return seam_ratio(self.diffs, seams)

    def join_motion(self, seams: list[range]) -> float:
        """Motion through the joins: the moving region's optical-flow speed at a seam (its slowest step)
        over the median speed of the other steps. 1 = the motion goes on through a join as anywhere
        else; below 1 it slows or stops there (a frame difference below the median can be that, too).
        NaN without a moving region or seams."""
        from stillmotion.evaluation.motion_metrics import seam_ratio

        return seam_ratio(self.speeds, seams, pick=min) if self.speeds else math.nan

    def drift_first_last(self) -> tuple[float, float]:
        if not self.drift:
            return math.nan, math.nan
        n = min(self.clip_len, len(self.drift))
        return float(np.mean(self.drift[:n])), float(np.mean(self.drift[-n:]))


def join_seams(method: str, num_frames: int, clip_len: int, overlap: int = 1) -> list[range]:
    """Per seam between separately sampled segments, the frames j whose step j-1 -> j belongs to it."""
    from stillmotion.sampling.segments import direct_segments, phased_segments

    if num_frames <= clip_len:
        return []
    overlap = min(overlap, clip_len - 1)  # as sample_long clamps it
    if method == "phased":
        # a later segment starts at a = previous end - overlap; frame a is the previous segment's, frames
        # a+1 .. a+overlap-1 are cross-faded, a+overlap is the segment's own: steps a -> a+overlap
        return [range(a + min(overlap, 1), a + overlap + 1)
                for a, _ in phased_segments(num_frames, clip_len, overlap)[1:]]
    if method == "direct":
        # a later clip starts on the previous clip's last frame a; its first new frame is a + 1
        shared = int(clip_len > 1)
        return [range(a + shared, a + shared + 1) for a, _ in direct_segments(num_frames, clip_len)[1:]]
    return []


# -- the model ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def model_location(model: str | None, clip_frames: int, seed: int) -> Iterator[tuple[str | None, str]]:
    """(path for ``animate_diffusion``, label for the report). ``tiny-random`` builds the untrained tiny
    backbone with a fixed seed and saves it to a temporary folder, so it loads through the same path as a
    real model."""
    if model != TINY_RANDOM:
        if model is None:
            from stillmotion.engines.diffusion import default_model

            try:
                yield str(default_model()), f"bundled model ({default_model().name})"
            except UserInputError as exc:
                raise UserInputError(
                    f"{exc}; or pass --model {TINY_RANDOM} for the untrained tiny backbone"
                ) from exc
            return
        yield model, str(model)
        return
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
) -> dict[str, Any]:
    """Run ``method`` through the real engine; stream frames to ``video_path`` and the metrics."""
    from stillmotion.diffusion.preprocess import fit_field, fit_image, fit_mask
    from stillmotion.engines.diffusion import load_pipeline, resolve_device
    from stillmotion.io.video_writer import open_video_writer

    pipe = load_pipeline(model, device)  # loaded (and cached) before the clock starts
    clip_len = int(pipe.unet.config.num_frames)
    dev = resolve_device(device)
    with PeakMemory(dev) as mem:
        it, stats = animate_diffusion_for(
            scene, motion, frames=frames, model=model, steps=steps, seed=seed, size=size,
            long_method=method, gamma=gamma, omega=omega, overlap=overlap, device=device, progress=progress,
            fps=fps,
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
        metrics = StreamMetrics(image, still, clip_len)
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
    seams = join_seams(method, frames, clip_len, stats["overlap"])
    return {
        "method": method,
        "frames": count,
        "time_s": elapsed,
        "unet_calls": stats["unet_calls"],
        "frame_evaluations": stats["frame_evaluations"],
        "peak_mem_mib": mem.peak_mib,
        "join_smoothness": metrics.join_smoothness(seams),
        "join_motion": metrics.join_motion(seams),
        "motion": float(np.median(metrics.speeds)) if metrics.speeds else math.nan,
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
    from stillmotion.engines.diffusion import animate_diffusion

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
    ("Peak mem (MiB)", "peak_mem_mib"),
    ("Join smoothness", "join_smoothness"),
    ("Join motion", "join_motion"),
    ("Motion (px/frame)", "motion"),
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


def plot_consistency(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
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
) -> tuple[list[dict[str, Any]], str]:
    """Every method on the same backbone, input and seed. Writes (when ``out_dir``) one video per method,
    ``table.md``, ``table.csv``, ``consistency.png`` and ``report.json``; returns (rows, backbone label)."""
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
                )  # fmt: skip
            )
    add_speedups(rows)
    if out_dir is not None:
        used_overlap = rows[0]["overlap"] if rows else overlap
        title = (
            f"Longer animation, {frames} frames, {steps} steps, seed {seed}, backbone: {label}; "
            f"gamma {gamma}, omega {omega}, overlap {used_overlap}"
        )
        (out_dir / "table.md").write_text(markdown_table(rows, f"**{title}**"))
        write_csv(out_dir / "table.csv", rows)
        plot_consistency(out_dir / "consistency.png", rows, title)
        report = {"backbone": label, "frames": frames, "steps": steps, "seed": seed, "gamma": gamma,
                  "omega": omega, "overlap": used_overlap, "methods": rows}  # fmt: skip
        (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=float))
    return rows, label
