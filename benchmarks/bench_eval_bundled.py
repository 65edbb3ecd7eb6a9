"""The bundled model on the shared real videos, paper's metrics (docs/benchmarks.md's eval table).

    .venv/bin/python benchmarks/bench_eval_bundled.py [--out runs/eval_bundled] [--frames 16]

Runs ``stillmotion eval`` (``stillmotion.evaluation.runner.run``) on ../shared/data/videos with the
rows warp, diffusion ("Ours"), no-refiner, no-motion and no-strength, condition = each video's own
optical flow, the bundled model and its default steps, seed 0; then prints the table and the figures
docs/benchmarks.md quotes (Ours against the warp engine). FVD, LPIPS and Tem-Cons need weight files that this
machine does not have; they are reported as not computed. Skips cleanly without ../shared.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "videos"
METHODS = ["warp", "diffusion", "no-refiner", "no-motion", "no-strength"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "eval_bundled")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--videos", type=Path, default=VIDEOS)
    args = ap.parse_args()
    if not args.videos.is_dir():
        print(f"skipped: {args.videos} is not here")
        sys.exit(0)

    from stillmotion.errors import UserInputError
    from stillmotion.evaluation.runner import EvalOptions, run

    start = time.perf_counter()
    try:
        path = run(EvalOptions(videos=[args.videos], out=args.out, methods=METHODS, frames=[args.frames],
                               progress=True))  # fmt: skip
    except UserInputError as exc:
        ap.error(str(exc))
    elapsed = time.perf_counter() - start
    print((path / "table.md").read_text().split("Frame metrics")[0].rstrip())
    summary = {r["method"]: r for r in json.loads((path / "results.json").read_text())["summary"]}
    print(f"\n{elapsed:.0f} s; rows in {path / 'results.json'}")
    for method in ("diffusion", "warp"):
        r = summary.get(method)
        if r:
            print(f"{r['label']}: PSNR {r['psnr']:.2f}, SSIM {r['ssim']:.4f}, EPE {r['epe']:.3f} px, "
                  f"motion cos {r['cosine']:.3f}, adjacent SSIM {r['adjacent_ssim']:.4f}")  # fmt: skip

if __name__ == "__main__":
    main()
