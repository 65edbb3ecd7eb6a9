"""Dense motion field from arrows: a 1024x1024 field from 20 arrows, timed.

    .venv/bin/python benchmarks/bench_dense.py [--repeats 9] [--size 1024] [--arrows 20]

Times ``dense_flow_from_arrows`` in its default form (nearest-arrow-weighted vectors, eq. 6 reach;
one compiled numba pass, timed after a first call that loads or compiles it)
and eq. 6 verbatim (``normalize=False``), median and minimum over repeats, random arrows (seed 0).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from stillmotion.inputs.arrows import Arrow
from stillmotion.motion.dense import dense_flow_from_arrows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--arrows", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.size
    arrows = []
    for i in range(args.arrows):
        x0, y0 = rng.uniform(0, n - 1, 2)
        x1, y1 = np.clip([x0 + rng.uniform(-80, 80), y0 + rng.uniform(-80, 80)], 0, n - 1)
        arrows.append(Arrow(((float(x0), float(y0)), (float(x1), float(y1))), 1.0, f"a{i}"))
    mask = np.ones((n, n), bool)
    mask[: n // 4] = False
    print(f"{n}x{n} field from {args.arrows} arrows, {args.repeats} repeats")
    print("| variant | median ms | min ms | first call ms (loads/compiles the kernel) |")
    print("|---|---|---|---|")
    for label, kwargs in [
        ("default (with mask)", {"mask": mask}),
        ("eq. 6 verbatim (normalize=False)", {"normalize": False}),
    ]:
        t0 = time.perf_counter()
        dense_flow_from_arrows(arrows, n, n, **kwargs)
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            dense_flow_from_arrows(arrows, n, n, **kwargs)
            times.append(time.perf_counter() - t0)
        print(f"| {label} | {np.median(times) * 1e3:.0f} | {np.min(times) * 1e3:.0f} | {first * 1e3:.0f} |")


if __name__ == "__main__":
    main()
