"""Time saved by skipping untrained motion modules: one clip of the plain model (zero motion modules, a
stand-in for stock SVD) with the modules skipped, as the engine does, and forced through them.

    .venv/bin/python benchmarks/bench_motion_skip.py [--model plain] [--data ../shared/data]
        [--control warp-guided] [--repeats 3]

Input: the first held-out photo of benchmarks/bench_embedded.py (the cinemagraphy3d waterfall, its
arrows and mask, requested speed 1 px/frame at the working size), one clip of the model's length at its
default steps, same seed, through ``animate_diffusion`` (the CLI's path). "Forced" makes the pipeline
take its motion modules for trained, so the motion encoder runs on the field and the motion attention
and strength hooks run inside every UNet call; they add exactly zero, so the frames must match the
skipped run's (the largest difference is printed, in 1/255 units; a float reordering may move a pixel by
one level). The two ways alternate, ``--repeats`` times each; the median seconds per clip are printed and
their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_embedded as be  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="plain", help="a model whose motion modules are untrained")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--control", default="warp-guided", choices=["warp-guided", "none"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")

    import torch

    from stillmotion import api
    from stillmotion.diffusion.preprocess import fit_field, fit_mask
    from stillmotion.engines.diffusion import animate_diffusion, load_pipeline, model_size

    torch.set_grad_enabled(False)
    pipe = load_pipeline(args.model)
    if pipe.motion_modules_trained:
        parser.error(f"--model {args.model}: its motion modules are trained; nothing is skipped")
    adapter = pipe.motion_adapter
    item = be.heldout_inputs(args.data)[0]
    scene, drawn = api.prepare(item["image"], (), arrows_file=item["arrows_file"], mask=item["mask"])
    w, h = model_size(pipe, scene.width, scene.height)
    field = drawn * np.float32(1.0 / be.region_speed(fit_field(drawn, w, h), fit_mask(scene.mask, w, h)))

    frames = int(pipe.unet.config.num_frames)

    def clip(forced: bool) -> tuple[np.ndarray, float, str]:
        if forced:
            adapter.is_trained = lambda: True  # the pipeline now takes the zero modules for trained
        try:
            t0 = time.perf_counter()
            it, stats = animate_diffusion(scene, field, frames=frames, seed=args.seed, model=args.model,
                                          control=args.control)  # fmt: skip
            video = np.stack(list(it))
            return video, time.perf_counter() - t0, stats["motion_modules"]
        finally:
            adapter.__dict__.pop("is_trained", None)
            adapter.detach()

    clip(False), clip(True)  # warm-up: one-off allocations are neither way's cost
    times: dict[bool, list[float]] = {False: [], True: []}
    videos: dict[bool, np.ndarray] = {}
    states: dict[bool, str] = {}
    for r in range(args.repeats):
        for forced in (False, True):
            videos[forced], took, states[forced] = clip(forced)
            times[forced].append(took)
        print(f"  repeat {r + 1}/{args.repeats}: skipped {times[False][-1]:.2f} s, "
              f"forced {times[True][-1]:.2f} s", flush=True)  # fmt: skip
    diff = int(np.abs(videos[True].astype(np.int16) - videos[False].astype(np.int16)).max())
    skipped, forced = statistics.median(times[False]), statistics.median(times[True])
    print(f"model {args.model}, --control {args.control}, {item['name']}, {w}x{h}, "
          f"{len(videos[False])} frames, torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"motion modules skipped ({states[False]}): {skipped:.2f} s/clip (median of {args.repeats})")
    print(f"forced through them ({states[True]}): {forced:.2f} s/clip")
    print(f"skipping saves {forced - skipped:.2f} s/clip ({(forced - skipped) / forced:.0%}; "
          f"forced / skipped {forced / skipped:.2f}x); largest frame difference {diff}/255")  # fmt: skip


if __name__ == "__main__":
    main()
