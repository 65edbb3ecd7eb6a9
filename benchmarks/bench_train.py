"""Training throughput: steps/s and the share of step time spent waiting for data (target <= 10%).

    python benchmarks/bench_train.py                      # tiny diffusion config, workers 0 and 2
    python benchmarks/bench_train.py --steps 40 --threads 1
    python benchmarks/bench_train.py --camera             # the static-camera threshold measurements

The training benchmark builds a synthetic clip cache from scikit-image's photos (32x32, 8 frames;
cached under --cache), runs the real trainer (``stillmotion.training.diffusion.train``, tiny config,
``configs/diffusion_tiny.yaml``) for --steps steps per DataLoader setting and prints what the
trainer measured (``train_summary.json``: every step's wall time split into waiting for the next
batch and the rest; the first step, which pays for lazy initialisation, is left out).

``--camera`` prints the measurements behind ``stillmotion.training.camera.STATIC_THRESHOLD``: the
net camera drift of 25-frame clips of the DynTex tripod videos, and of the campfire video seen
through a window panning at known speeds, with DIS flow at 256 px (needs ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STILLMOTION_SHARED_DATA", REPO.parent / "shared" / "data"))


def bench_training(args: argparse.Namespace) -> None:
    import torch

    from stillmotion.training.config import load_config
    from stillmotion.training.diffusion import DiffusionConfig, train
    from stillmotion.training.prepare import PrepareSettings, prepare_synthetic

    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    report = prepare_synthetic("skimage", cache, PrepareSettings(frames=8, size=(32, 32)), clips_per_photo=4)
    print(f"cache: {report.summary()}")
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f}, torch threads {torch.get_num_threads()}")
    print(f"{'workers':>8} {'steps/s':>8} {'s/step':>8} {'data wait':>10}")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as out:
            cfg = load_config(DiffusionConfig, REPO / "configs" / "diffusion_tiny.yaml", [
                f"data={cache}", f"output_dir={out}", f"max_steps={args.steps}", f"workers={workers}",
                "progress=false", "save_pipeline=false", "eval_every=0", f"checkpoint_every={args.steps}",
                f"batch_size={args.batch_size}", f"cpu_threads={args.threads}"])
            t = time.perf_counter()
            train(cfg)
            wall = time.perf_counter() - t
            s = json.loads((Path(out) / "train_summary.json").read_text())["this_run_after_first_step"]
        print(f"{workers:>8} {s['steps_per_s']:>8.2f} {1 / s['steps_per_s']:>8.3f} {s['data_wait']:>9.1%}"
              f"   ({s['steps']} steps timed; whole run with start-up and evaluations {wall:.1f} s)")


def bench_camera() -> None:
    import cv2
    import numpy as np

    from stillmotion.io.video_reader import open_frames
    from stillmotion.motion.flow import FlowEstimator
    from stillmotion.training.camera import STATIC_THRESHOLD, camera_motion
    from stillmotion.training.synthetic import crop_resize

    videos = SHARED / "videos" / "dyntex"
    if not videos.is_dir():
        sys.exit(f"{videos} is absent: --camera needs ../shared/data")
    flow = FlowEstimator("dis")

    def frames_of(path: Path, start: int, n: int = 25) -> list:
        out = []
        for i, f in enumerate(open_frames(path)):
            if i >= start:
                out.append(f)
            if len(out) == n:
                break
        return out

    def drift(frames: list) -> float:
        return camera_motion(np.stack([flow(a, b) for a, b in zip(frames[:-1], frames[1:], strict=True)]))

    print(f"net camera drift, px/frame at 512 px (DIS flow at 256 px); threshold {STATIC_THRESHOLD}")
    for name in ("dyntex_fountain_6486110.avi", "dyntex_flag_571c110.avi", "campfire_pot_fire.avi"):
        for start in (0, 100, 200):
            fr = frames_of(videos / name, start)
            if len(fr) == 25:
                value = drift([crop_resize(f, (256, 256)) for f in fr])
                print(f"  tripod {name:30s} frames {start:3d}-{start + 24:3d}: {value:.3f}")
    fr = frames_of(videos / "campfire_pot_fire.avi", 0)
    for speed in (0.1, 0.25, 0.5, 1.0):
        step = speed * 600 / 512  # window of 600 px, speed given at 512 px
        crops = [cv2.resize(f[60:660, int(100 + i * step) : int(100 + i * step) + 600], (256, 256),
                            interpolation=cv2.INTER_AREA) for i, f in enumerate(fr)]
        print(f"  pan {speed:4.2f} px/frame (campfire through a moving window):     {drift(crops):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "stillmotion_bench_train_cache"))
    parser.add_argument("--camera", action="store_true", help="the static-camera threshold measurements")
    args = parser.parse_args()
    if args.camera:
        bench_camera()
    else:
        bench_training(args)


if __name__ == "__main__":
    main()
