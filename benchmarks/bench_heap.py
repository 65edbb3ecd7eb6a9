"""Time and peak memory of a long CPU video under each glibc mmap threshold ``steady_heap`` could set.

Each run is a fresh process (a process's heap keeps what it freed): the bundled model, the bundled
example, ``--frames`` frames (phased, more than one clip) at ``--steps`` steps, with
``engines.long_video.HEAP_MMAP_THRESHOLD`` set to each of ``--thresholds`` MiB (0: glibc left alone).
Prints wall seconds and the process's peak resident memory per run, and each threshold's mean time over
the unset one's.

    .venv/bin/python benchmarks/bench_heap.py --thresholds 0,1,4,16 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import resource, sys, time
import stillmotion.engines.long_video as lv
lv.HEAP_MMAP_THRESHOLD = int(float(sys.argv[1]) * (1 << 20))
from stillmotion import api
E = sys.argv[4]
t = time.perf_counter()
api.animate(E + "/waterfall.jpg", arrows_file=E + "/waterfall_arrows.json", mask=E + "/waterfall_mask.png",
            engine="diffusion", frames=int(sys.argv[2]), steps=int(sys.argv[3]))
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--thresholds", default="0,1,4,16", help="MiB, comma list (0: glibc left alone)")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    try:
        thresholds = [float(t) for t in args.thresholds.split(",")]
    except ValueError:
        ap.error(f"--thresholds must be numbers of MiB separated by commas, got {args.thresholds!r}")
    if any(not t >= 0 for t in thresholds):
        ap.error(f"--thresholds must be >= 0, got {args.thresholds!r}")
    for name in ("frames", "steps", "repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    examples = ROOT / "src" / "stillmotion" / "assets" / "examples"
    unset = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PYTHONPATH"] = str(ROOT / "src")
    times: dict[float, list[float]] = {t: [] for t in thresholds}
    print(f"bundled model, {args.frames} frames, {args.steps} steps, one fresh process per run")
    for r in range(args.repeats):
        for t in thresholds:  # interleaved, so a slower stretch of the machine hits every threshold
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, str(t), str(args.frames), str(args.steps), str(examples)],
                capture_output=True, text=True, env=env, check=True,
            ).stdout.split()  # fmt: skip
            seconds, peak = float(out[-2]), float(out[-1])
            times[t].append(seconds)
            print(f"run {r + 1}, threshold {t:g} MiB: {seconds:.2f} s, peak resident {peak:.0f} MiB",
                  flush=True)  # fmt: skip
    base = sum(times[thresholds[0]]) / len(times[thresholds[0]])
    for t in thresholds:
        mean = sum(times[t]) / len(times[t])
        print(f"threshold {t:g} MiB: mean {mean:.2f} s, {mean / base:.2f}x the time of {thresholds[0]:g} MiB")


if __name__ == "__main__":
    main()
