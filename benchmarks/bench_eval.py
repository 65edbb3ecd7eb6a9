"""Cost of scoring one generated clip in `stillmotion eval`, metric by metric, on a real clip.

    .venv/bin/python benchmarks/bench_eval.py [--video VIDEO] [--frames 16] [--size 256] [--repeats 3]

VIDEO defaults to ../shared/data/videos/dyntex/dyntex_fountain_6486110.avi.

The "generated" clip is the real clip shifted by one frame (so every metric has work to do). Prints
the median time per clip of each weightless metric, and our SSIM against scikit-image's on the same
frames (time ratio and the largest difference), so the cost of a benchmark run can be planned.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from skimage.metrics import structural_similarity

from stillmotion.evaluation import frame_metrics as fm
from stillmotion.evaluation import motion_metrics as mm
from stillmotion.evaluation.runner import read_clip

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_VIDEO = SHARED / "videos" / "dyntex" / "dyntex_fountain_6486110.avi"


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    clip, _ = read_clip(args.video, args.frames + 1, args.size, 16)
    real, gen = clip[:-1], clip[1:]
    n, h, w = real.shape[:3]
    print(f"clip: {args.video.name}, {n} frames at {w}x{h}, median of {args.repeats} runs")
    fw = mm.video_flows(gen)
    bw = mm.video_flows(gen, backward=True)
    rows = [
        ("PSNR (all frames)", lambda: fm.psnr_per_frame(gen, real)),
        ("SSIM (all frames)", lambda: fm.ssim_per_frame(gen, real)),
        ("adjacent SSIM", lambda: fm.adjacent_ssim(gen)),
        ("flows forward (N-1 pairs)", lambda: mm.video_flows(gen)),
        ("flows backward (N-1 pairs)", lambda: mm.video_flows(gen, backward=True)),
        ("warp error (flows given)", lambda: mm.warp_error_per_frame(gen, fw, bw)),
        ("motion fidelity (flows given)", lambda: mm.motion_fidelity(fw.mean(0), fw)),
        ("still-region drift", lambda: mm.still_region_drift(gen, real[0], np.ones((h, w), bool))),
    ]
    for name, fn in rows:
        t, _ = timed(fn, args.repeats)
        print(f"{name:32s} {t * 1000:9.1f} ms")
    ours_t, ours = timed(lambda: fm.ssim_per_frame(gen, real), args.repeats)

    def sk():
        return np.array([
            structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=255)
            for a, b in zip(gen, real, strict=True)
        ])  # fmt: skip

    sk_t, ref = timed(sk, args.repeats)
    print(f"SSIM ours vs scikit-image: {ours_t * 1000:.1f} ms vs {sk_t * 1000:.1f} ms "
          f"(ratio {sk_t / ours_t:.2f}x), max |difference| {np.abs(ours - ref).max():.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
