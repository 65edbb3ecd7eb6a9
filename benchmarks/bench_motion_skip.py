"""Time saved by skipping untrained motion modules: the plain model (zero motion modules, a stand-in for
stock SVD) with the modules skipped, as the engine does, and forced through them.

    .venv/bin/python benchmarks/bench_motion_skip.py [--model plain] [--data ../shared/data] [--calls 8]

Input: the first held-out photo of benchmarks/bench_embedded.py (the cinemagraphy3d waterfall, its
arrows and mask, requested speed 1 px/frame at the working size), one clip of the model's length.
"Forced" makes the pipeline take its motion modules for trained, so the motion encoder runs on the field
and the motion attention and strength hooks run inside every UNet call. They add exactly zero, so a
whole clip (``animate_diffusion``, warp-guided, the model's steps, same seed) must come out the same both
ways: the largest frame difference is printed (1/255 units).

Timing: ``prepare`` (the motion encoder runs there, once per video) and one denoiser call (the UNet with
its guidance batch, where the motion attention runs), the two ways alternating, ``--calls`` times each,
torch on one thread; the medians of the process's CPU time are printed (on a shared machine the CPU time
of this process moves far less with the other jobs than the wall time), with their ratio and the share
of a clip's time saved (a clip = prepare + one call per step run).
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
    parser.add_argument("--calls", type=int, default=8, help="timed prepare + denoiser calls per way")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.calls < 1:
        parser.error(f"--calls must be >= 1, got {args.calls}")

    import torch

    from stillmotion import api
    from stillmotion.diffusion.preprocess import fit_field, fit_mask
    from stillmotion.engines.diffusion import (
        animate_diffusion,
        load_pipeline,
        model_defaults,
        model_path,
        model_size,
    )

    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    pipe = load_pipeline(args.model, "cpu")
    if pipe.motion_modules_trained:
        parser.error(f"--model {args.model}: its motion modules are trained; nothing is skipped")
    adapter = pipe.motion_adapter
    item = be.heldout_inputs(args.data)[0]
    scene, drawn = api.prepare(item["image"], (), arrows_file=item["arrows_file"], mask=item["mask"])
    w, h = model_size(pipe, scene.width, scene.height)
    field = drawn * np.float32(1.0 / be.region_speed(fit_field(drawn, w, h), fit_mask(scene.mask, w, h)))
    frames = int(pipe.unet.config.num_frames)
    steps = int(model_defaults(model_path(args.model)).get("steps", 25))

    class Forced:
        """The zero motion modules taken for trained while inside."""

        def __init__(self, on: bool) -> None:
            self.on = on

        def __enter__(self) -> None:
            if self.on:
                adapter.is_trained = lambda: True

        def __exit__(self, *exc: object) -> None:
            adapter.__dict__.pop("is_trained", None)
            adapter.detach()

    videos = {}
    for forced in (False, True):
        with Forced(forced):
            it, stats = animate_diffusion(scene, field, frames=frames, seed=args.seed, model=args.model,
                                          device="cpu", control="warp-guided")  # fmt: skip
            videos[forced] = (np.stack(list(it)), stats["motion_modules"], stats["steps_run"])
    diff = int(np.abs(videos[True][0].astype(np.int16) - videos[False][0].astype(np.int16)).max())

    def prepared():
        return pipe.prepare(scene.image, field, mask=scene.mask, num_frames=frames, width=w, height=h,
                            generator=torch.Generator().manual_seed(args.seed))  # fmt: skip

    cpu: dict[tuple[str, bool], list[float]] = {(k, f): [] for k in ("prepare", "call")
                                                for f in (False, True)}  # fmt: skip
    x = None
    for c in range(args.calls + 1):  # the first round warms both ways up, untimed
        for forced in (False, True):
            with Forced(forced):
                t0 = time.process_time()
                den = prepared().denoiser
                t1 = time.process_time()
                sigmas = den.set_schedule(steps)
                unit = torch.randn(den.latent_shape(frames), generator=torch.Generator().manual_seed(1))
                x = unit * sigmas[0]
                t2 = time.process_time()
                den(x, sigmas[0])
                t3 = time.process_time()
            if c:
                cpu[("prepare", forced)].append(t1 - t0)
                cpu[("call", forced)].append(t3 - t2)
        print(f"  round {c}/{args.calls}{' (warm-up)' if not c else ''}", flush=True)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    run = videos[False][2]
    clip = {f: med[("prepare", f)] + run * med[("call", f)] for f in (False, True)}
    print(f"model {args.model}, {item['name']}, {w}x{h}, {frames} frames, {steps} steps ({run} run, "
          f"warp-guided), torch 1 thread; CPU s, median of {args.calls}")  # fmt: skip
    print("| | motion modules skipped | forced through them | forced / skipped |")
    print("| --- | --- | --- | --- |")
    for k in ("prepare", "call"):
        a, b = med[(k, False)], med[(k, True)]
        print(f"| {k} | {a:.3f} | {b:.3f} | {b / a:.2f}x |")
    a, b = clip[False], clip[True]
    print(f"| clip (prepare + {run} calls) | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
    print(f"skipping saves {b - a:.2f} CPU s per clip ({(b - a) / b:.0%}); stats say {videos[False][1]!r} / "
          f"{videos[True][1]!r}; largest frame difference of the two clips {diff}/255")  # fmt: skip


if __name__ == "__main__":
    main()
