"""Optical-flow accuracy and speed on real ground truth: stock DIS "medium" vs. the default vs. Farneback.

    .venv/bin/python benchmarks/bench_flow.py [--rounds 9] [--data ../shared/data] [--raft-weights W.pth]

Data: Middlebury RubberWhale (frame10 -> frame11, flow10.flo) and MPI-Sintel alley_1 clean
(frame_0002 -> frame_0003, gt/frame_0002.flo). EPE is the mean end-point error over every pixel
with a known ground truth ("EPE all": RubberWhale's unknown-flow markers > 1e9 and Sintel's
invalid mask excluded; occluded pixels included). Timing: the methods run interleaved, one call
each per round in a shuffled order, so that load from other processes hits all of them alike;
the table gives the median and the minimum over rounds, and the ratio to DIS medium in this run.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from stillmotion.io.flo import read_flo, valid_flow_mask
from stillmotion.motion.flow import FlowEstimator, dis_preset_flow

REPO = Path(__file__).resolve().parents[1]


def load_pairs(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    def rgb(p: Path) -> np.ndarray:
        return np.asarray(Image.open(p).convert("RGB"))

    rw = root / "flow_gt" / "middlebury_rubberwhale"
    gt = read_flo(rw / "flow10.flo")
    pairs = {
        "RubberWhale 10->11": (rgb(rw / "frame10.png"), rgb(rw / "frame11.png"), gt, valid_flow_mask(gt))
    }
    al = root / "flow_gt" / "sintel" / "alley_1"
    gt = read_flo(al / "gt" / "frame_0002.flo")
    invalid = np.asarray(Image.open(al / "gt" / "invalid_frame_0002.png")) > 0
    pairs["Sintel alley_1 clean 2->3"] = (
        rgb(al / "clean" / "frame_0002.png"),
        rgb(al / "clean" / "frame_0003.png"),
        gt,
        valid_flow_mask(gt) & ~invalid,
    )
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--raft-weights", type=Path, default=None, help="also run RAFT with these weights")
    parser.add_argument("--threads", type=int, default=None, help="OpenCV threads (default: OpenCV's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    if not (args.data / "flow_gt").is_dir():
        sys.exit(f"ground truth not found under {args.data}/flow_gt")

    default = FlowEstimator()  # the tuned DIS every command uses
    farneback = FlowEstimator("farneback")
    methods = {
        "DIS medium (OpenCV preset)": lambda a, b: dis_preset_flow(a, b, "medium"),
        "dis (stillmotion default)": default,
        "farneback": farneback,
    }
    if args.raft_weights is not None:
        methods["raft"] = FlowEstimator("raft", weights=args.raft_weights)

    rng = random.Random(0)
    print(f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} OpenCV threads, {args.rounds} rounds")
    for name, (a, b, gt, valid) in load_pairs(args.data).items():
        epe = {}
        times: dict[str, list[float]] = {m: [] for m in methods}
        for m, fn in methods.items():
            flow = fn(a, b)  # also warms up
            epe[m] = float(np.linalg.norm(flow - gt, axis=-1)[valid].mean())
        for _ in range(args.rounds):
            order = list(methods)
            rng.shuffle(order)
            for m in order:
                t0 = time.perf_counter()
                methods[m](a, b)
                times[m].append(time.perf_counter() - t0)
        ref_med = float(np.median(times["DIS medium (OpenCV preset)"]))
        ref_min = float(np.min(times["DIS medium (OpenCV preset)"]))
        h, w = gt.shape[:2]
        print(f"\n{name} ({w}x{h}, EPE over {valid.mean() * 100:.2f}% of pixels)")
        print("| method | EPE (px) | median ms | min ms | time / DIS medium (median, min) |")
        print("|---|---|---|---|---|")
        for m in methods:
            med, mn = float(np.median(times[m])) * 1e3, float(np.min(times[m])) * 1e3
            ratios = f"{med / 1e3 / ref_med:.2f}x, {mn / 1e3 / ref_min:.2f}x"
            print(f"| {m} | {epe[m]:.3f} | {med:.1f} | {mn:.1f} | {ratios} |")


if __name__ == "__main__":
    main()
