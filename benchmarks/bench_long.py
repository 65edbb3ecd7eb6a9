"""Longer animation on the tiny backbone (paper Table 2 layout): cost, joins, memory. Prints its figures.

    .venv/bin/python benchmarks/bench_long.py [--frames 125] [--steps 25] [--size 32x16] [--out DIR]
        [--model tiny-random | bundled | DIR] [--overlap N] [--branch-sigma S] [--omega W]
        [--carry motion|reference|appearance|own|copy] [--control auto|trained|warp-guided|none]
        [--follow F] [--freedom F] [--reference-pace | --meter-check | --single-clips SEEDS]

1. All four methods (phased, direct, freenoise, gen-l-video) on the bundled waterfall example (arrows +
   mask), same backbone, input and seed, through ``stillmotion bench-long``'s code path: the tiny
   diffusers backbone with RANDOM weights (untrained: the costs and the memory are real, the pictures
   are not), 25-frame base clips, 125 frames, 25 steps, CPU. ``--model bundled`` (or a model folder)
   runs the same on a trained model at its own size and clip length instead. Prints the table, the
   comparison strip's path (strip.png: one frame every 10 per method) and the figures against the
   targets: phased >= 2.5x faster than direct and freenoise, >= 4x than gen-l-video; phased join motion
   >= 0.9 and join smoothness <= 1.3; along-arrow speed of every third >= 0.8 of the first third's and
   no backward step, per method.
2. Peak memory of phased for 125 and for 500 frames, each in a fresh process (the allocator's history
   does not leak between them), target: 500 frames <= 1.3x 125 frames.

``--reference-pace``, ``--meter-check`` and ``--single-clips`` print only the along-arrow pace of the
motion reference, the meter's reading of known motion, and one clip of the model per seed.

Torch runs on one thread by default (BENCH_THREADS): on a machine whose cores are shared with other
jobs, OpenMP's spinning worker threads otherwise make every kernel tens of times slower and the timings
meaningless. Ratios come from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "src" / "stillmotion" / "assets" / "examples"


def scene_and_motion():
    from stillmotion.inputs.scene import load_scene
    from stillmotion.motion.dense import dense_flow_from_arrows

    scene = load_scene(EXAMPLES / "waterfall.jpg", (), EXAMPLES / "waterfall_arrows.json",
                       EXAMPLES / "waterfall_mask.png")  # fmt: skip
    return scene, dense_flow_from_arrows(scene.arrows, scene.width, scene.height, mask=scene.mask)


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def model_and_size(model: str, size: str | None) -> tuple[str | None, tuple[int, int] | None]:
    """``--model`` and ``--size`` -> (model for bench-long's code path, frame size): the tiny random
    backbone defaults to 32x16, a trained model to its own size."""
    if model == "tiny-random":
        return model, parse_size(size or "32x16")
    return (None if model == "bundled" else model), (parse_size(size) if size else None)


def memory_child(
    frames: int, steps: int, size: str | None, seed: int, model: str, overlap: int | None, long_opts: dict
) -> None:
    """Run phased once in this (fresh) process and print its peak memory as JSON, with the resident
    memory's peak in each tenth of the run's time (growth shows as a rising trace; single-run peaks
    vary by some tens of MiB between processes)."""
    import threading
    import time

    from stillmotion.evaluation.long_bench import _rss_bytes, model_location, run_method

    scene, motion = scene_and_motion()
    model, wh = model_and_size(model, size)
    opts = dict(size=wh, gamma=0.8, overlap=overlap, device="cpu", fps=8, progress=False,
                **long_opts)  # fmt: skip
    opts.setdefault("omega", 0.2)
    trace: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            trace.append((time.perf_counter(), _rss_bytes()))
            time.sleep(0.005)

    with model_location(model, 25, seed) as (path, _), tempfile.TemporaryDirectory() as tmp:
        # warm-up: first calls allocate one-off buffers that are not the method's cost
        run_method("phased", scene, motion, frames=26, model=path, steps=1, seed=seed, video_path=None,
                   **opts)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        row = run_method("phased", scene, motion, frames=frames, model=path, steps=steps, seed=seed,
                         video_path=Path(tmp) / "phased.mp4", **opts)  # fmt: skip
        stop.set()
        poller.join()
    t0, t1 = trace[0][0], trace[-1][0]
    tenths = [0] * 10
    for t, rss in trace:
        i = min(9, int(10 * (t - t0) / max(t1 - t0, 1e-9)))
        tenths[i] = max(tenths[i], rss)
    keep = ("method", "peak_mem_mib", "time_s", "along_thirds", "along_pace", "along_pace_last",
            "along_slowest", "along_per_step", "seams", "join_smoothness", "join_motion",
            "join_smoothness_stretch", "join_motion_stretch", "frame_evaluations")
    print(json.dumps({"frames": frames, **{k: row[k] for k in keep},
                      "rss_peak_by_tenth_mib": [round(v / 2**20, 1) for v in tenths]}))  # fmt: skip


def reference_pace(frames: int, model: str, size: str | None, seed: int) -> None:
    """Along-arrow speed of the motion reference itself (the input warped along the field by the warp
    engine's forward mode: the bundled model's conditioning, phased's carry), no UNet: whether the motion
    the model is given keeps its pace over ``frames`` frames."""
    from stillmotion.diffusion.preprocess import fit_field, fit_image, fit_mask
    from stillmotion.diffusion.warp_condition import warped_image_frames
    from stillmotion.evaluation.long_bench import StreamMetrics, arrow_rows

    scene, motion = scene_and_motion()
    w, h = size_for(model, size, seed, scene)
    image = fit_image(scene.image, w, h)
    mask = fit_mask(scene.mask, w, h)
    arrows = arrow_rows(scene.arrows, (scene.width, scene.height), w, h)
    metrics = StreamMetrics(image, ~mask, 1, arrows=arrows)
    for frame in warped_image_frames(image, fit_field(motion, w, h), frames, mask):
        metrics.add(frame)
    thirds, slowest = metrics.along_thirds()
    print(f"motion reference (forward warp, no UNet), {frames} frames at {w}x{h}: along-arrow px/frame "
          f"by third {thirds[0]:.3f} / {thirds[1]:.3f} / {thirds[2]:.3f}, slowest step {slowest:.3f}")


def size_for(model: str, size: str | None, seed: int, scene) -> tuple[int, int]:
    """(width, height) the model works at: ``--size``, else the model's own for the scene."""
    from stillmotion.engines.diffusion import load_pipeline, model_size
    from stillmotion.evaluation.long_bench import model_location

    name, wh = model_and_size(model, size)
    if wh is None:
        with model_location(name, 25, seed) as (path, _):
            wh = model_size(load_pipeline(path, "cpu"), scene.width, scene.height)
    return wh


def meter_check(model: str, size: str | None, seed: int) -> None:
    """The along-arrow meter on motion whose truth is known, at the model's size: the photo translated by
    v px/frame along the arrows' mean direction (drawn 8x larger, bilinear, area-averaged down: an exact
    sub-pixel shift), and the photo held still with fresh grey-level noise in every frame. Prints the
    meter's error against the truth and its spread over the frame steps."""
    import cv2
    import numpy as np

    from stillmotion.diffusion.preprocess import fit_image
    from stillmotion.evaluation.long_bench import StreamMetrics, arrow_rows

    scene, _ = scene_and_motion()
    w, h = size_for(model, size, seed, scene)
    arrows = arrow_rows(scene.arrows, (scene.width, scene.height), w, h)
    u = arrows[:, 2:].mean(0)
    u /= np.linalg.norm(u)
    up = 8
    big = fit_image(scene.image, w * up, h * up)
    image = fit_image(scene.image, w, h)
    rng = np.random.default_rng(seed)
    for label, v, noise in (("shift 0.10 px/frame", 0.10, 0.0), ("shift 0.15 px/frame", 0.15, 0.0),
                            ("still, noise sd 2 grey levels", 0.0, 2.0)):  # fmt: skip
        metrics = StreamMetrics(image, np.zeros((h, w), bool), 1, arrows=arrows)
        for t in range(40):
            shift = np.float32([[1, 0, u[0] * v * t * up], [0, 1, u[1] * v * t * up]])
            moved = cv2.warpAffine(big, shift, (w * up, h * up), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)  # fmt: skip
            frame = cv2.resize(moved, (w, h), interpolation=cv2.INTER_AREA)
            if noise:
                frame = np.clip(frame + noise * rng.standard_normal(frame.shape), 0, 255)
            metrics.add(frame.round().astype(np.uint8))
        steps = np.array(metrics.along)
        truth = v * float(np.mean(arrows[:, 2:] @ u))  # the mean over arrows of the shift along each
        print(f"meter check at {w}x{h}, {label}: truth {truth:.3f} along the arrows, read "
              f"{steps.mean():.3f}, spread over 39 steps (sd) {steps.std():.3f}, largest error "
              f"{np.abs(steps - truth).max():.3f}")  # fmt: skip


def single_clips(model: str, size: str | None, seeds: list[int], steps: int) -> None:
    """Along-arrow speed of every frame step of one clip of the model (its own clip length; no long-video
    method runs) per seed: whether a clip of the model goes back by itself."""
    import numpy as np

    from stillmotion.engines.diffusion import load_pipeline
    from stillmotion.evaluation.long_bench import model_location, run_method

    scene, motion = scene_and_motion()
    name, wh = model_and_size(model, size)
    for seed in seeds:
        with model_location(name, 25, seed) as (path, _):
            clip = int(load_pipeline(path, "cpu").unet.config.num_frames)
            r = run_method("phased", scene, motion, frames=clip, model=path, steps=steps, seed=seed, size=wh,
                           gamma=0.8, omega=0.2, overlap=None, device="cpu", video_path=None, fps=8,
                           progress=False)  # fmt: skip
        a = np.array(r["along_per_step"])
        back = [t + 1 for t in np.flatnonzero(a < 0).tolist()]
        print(f"one {clip}-frame clip, seed {seed}: along-arrow mean {a.mean():.3f} px/frame, slowest step "
              f"{a.min():.3f}, {len(back)} backward steps of {len(a)} (frames {' '.join(map(str, back))}); "
              f"steps {' '.join(f'{v:+.2f}' for v in a)}")  # fmt: skip


def print_pace(r: dict) -> None:
    """The pace figures of one row against the targets, and where its backward steps are."""
    a = r["along_thirds"]
    worst = min(r["along_pace"], r["along_pace_last"])
    ok = "met" if worst >= 0.8 and r["along_slowest"] >= 0 else "NOT met"
    print(f"{r['method']}: along-arrow px/frame by third {a[0]:.2f} / {a[1]:.2f} / {a[2]:.2f} "
          f"(later thirds / first >= 0.8: {worst:.2f}); slowest step {r['along_slowest']:.2f} "
          f"(no backward step): {ok}")  # fmt: skip
    steps = r.get("along_per_step") or []
    back = [t + 1 for t, v in enumerate(steps) if v < 0]  # frame t: the step t-1 -> t
    if back:
        seam = {f for s, n in r.get("seams", []) for f in range(s, s + n)}
        at = sum(f in seam for f in back)
        print(f"  {len(back)} backward steps of {len(steps)}, {at} at a join; frames "
              f"{' '.join(str(f) for f in back[:24])}{' ...' if len(back) > 24 else ''}; "
              f"mean of the backward steps {sum(steps[f - 1] for f in back) / len(back):.3f}")  # fmt: skip


def print_join_profile(r: dict) -> None:
    """Step by step from segment 1's start and from each join: whether the later segments move (DIS
    speed of the moving region) and change (mean frame difference) as segment 1 did at the same place."""
    from stillmotion.evaluation.long_bench import steps_after_joins

    seams = [range(s, s + n) for s, n in r.get("seams", [])]
    count = r["clip_len"] - 1
    for key, label, fmt in (("speed_per_step", "DIS speed (px/frame)", ".3f"),
                            ("diff_per_step", "frame difference (grey levels)", ".2f")):  # fmt: skip
        first, later, joins = steps_after_joins(r.get(key) or [], seams, count)
        if not later:
            continue
        print(f"phased {label}, step i -> i+1 from the start of segment 1 / from each join (mean over "
              f"{joins} joins):")
        print("  segment 1: " + " ".join(f"{v:{fmt}}" for v in first))
        print("  joins:     " + " ".join(f"{v:{fmt}}" for v in later))
        ratio = [b / a if a > 0 else float("nan") for a, b in zip(first, later, strict=True)]
        print("  ratio:     " + " ".join(f"{v:.2f}" for v in ratio))
        per_step = r.get(key) or []
        pick = min if key == "speed_per_step" else max  # as join motion / join smoothness judge a seam
        seam_steps = [pick(per_step[j - 1] for j in s) for s in seams
                      if 1 <= s.start and s.stop - 1 <= len(per_step)]  # fmt: skip
        print("  each join (the step its figure judges): " + " ".join(f"{v:{fmt}}" for v in seam_steps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=125)
    ap.add_argument("--long-frames", type=int, default=500, help="length for the memory comparison")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--size", default=None, help="WxH (default: 32x16 for tiny-random, else the model's)")
    ap.add_argument("--model", default="tiny-random", help="tiny-random (default), bundled or a model folder")
    ap.add_argument("--overlap", type=int, default=None,
                    help="phased: frames shared per join (default: 1; warp-guided 5)")
    ap.add_argument("--branch-sigma", type=float, default=None, help="phased: branch at this noise level")
    ap.add_argument("--omega", type=float, default=0.2, help="phased: randomness of the rescheduled noise")
    ap.add_argument("--carry", default="motion", choices=["motion", "reference", "appearance", "own", "copy"],
                    help="phased: how later segments continue segment 1 (see sample_phased)")
    ap.add_argument("--control", default=None, choices=["auto", "trained", "warp-guided", "none"],
                    help="how the arrows steer the model (auto: trained motion modules, else warp-guided)")
    ap.add_argument("--follow", type=float, default=None, help="warp-guided: --follow")
    ap.add_argument("--freedom", type=float, default=None, help="warp-guided: --freedom")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="phased,direct,freenoise,gen-l-video")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "bench-long")
    ap.add_argument("--skip-table", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--reference-pace", action="store_true",
                    help="only the motion reference's along-arrow pace at --frames and --long-frames")
    ap.add_argument("--meter-check", action="store_true",
                    help="only the along-arrow meter on known motion (exact sub-pixel shifts, a still photo)")
    ap.add_argument("--single-clips", default=None, metavar="SEEDS",
                    help="only one clip of the model per seed (comma-separated): its along-arrow steps")
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.overlap is not None and args.overlap < 0:
        ap.error(f"--overlap must be >= 0, got {args.overlap}")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    if args.omega < 0:
        ap.error(f"--omega must be >= 0, got {args.omega}")
    long_opts = {"branch_sigma": args.branch_sigma, "carry": args.carry}
    if args.control is not None:
        long_opts["control"] = args.control
    for knob in ("follow", "freedom"):
        if getattr(args, knob) is not None:
            long_opts[knob] = getattr(args, knob)

    if args.memory_child is not None:
        memory_child(args.memory_child, args.steps, args.size, args.seed, args.model, args.overlap,
                     {**long_opts, "omega": args.omega})
        return

    if args.meter_check:
        meter_check(args.model, args.size, args.seed)
        return

    if args.single_clips:
        single_clips(args.model, args.size, [int(v) for v in args.single_clips.split(",")], args.steps)
        return

    if args.reference_pace:
        for n in (args.frames, args.long_frames):
            reference_pace(n, args.model, args.size, args.seed)
        return

    if not args.skip_table:
        from stillmotion.evaluation.long_bench import run_bench_long

        scene, motion = scene_and_motion()
        model, wh = model_and_size(args.model, args.size)
        args.out.mkdir(parents=True, exist_ok=True)
        rows, label = run_bench_long(
            scene, motion, out_dir=args.out, frames=args.frames, methods=args.methods.split(","),
            model=model, steps=args.steps, seed=args.seed, size=wh, omega=args.omega, overlap=args.overlap,
            clip_frames=25, device="cpu", progress=True, **long_opts,
        )  # fmt: skip
        print((args.out / "table.md").read_text())
        by = {r["method"]: r for r in rows}
        ph = by.get("phased")
        if ph:
            for other, target in (("direct", 2.5), ("freenoise", 2.5), ("gen-l-video", 4.0)):
                if other in by:
                    ratio = by[other]["time_s"] / ph["time_s"]
                    work = by[other]["frame_evaluations"] / ph["frame_evaluations"]
                    print(f"phased vs {other}: {ratio:.2f}x faster (target >= {target}x: "
                          f"{'met' if ratio >= target else 'NOT met'}); {work:.2f}x fewer UNet frame-evals")
            js, jm = ph["join_smoothness"], ph["join_motion"]
            ok = "met" if jm >= 0.9 and js <= 1.3 else "NOT met"
            print(f"phased join motion {jm:.3f} (target >= 0.9), join smoothness {js:.3f} "
                  f"(target <= 1.3): {ok} (carry {ph.get('carry')})")  # fmt: skip
            width = max((n for _, n in ph.get("seams", [])), default=1)
            if width > 1:  # a wide seam's slowest (largest) step against single steps is biased
                print(f"  against stretches of {width} steps away from the joins (a seam's width): join "
                      f"motion {ph['join_motion_stretch']:.3f}, "
                      f"join smoothness {ph['join_smoothness_stretch']:.3f}")
            print_join_profile(ph)
        for r in rows:
            print_pace(r)
        print(f"comparison strip (one frame every 10): {args.out / 'strip.png'}")
        print(f"videos, table.md/.csv, consistency.png, strip.png, report.json in {args.out}")

    if not args.skip_memory:
        peaks = {}
        for n in (args.frames, args.long_frames):
            cmd = [sys.executable, __file__, "--memory-child", str(n), "--steps", str(args.steps),
                   "--seed", str(args.seed), "--model", args.model]  # fmt: skip
            cmd += ["--size", args.size] if args.size else []
            cmd += ["--overlap", str(args.overlap)] if args.overlap is not None else []
            cmd += ["--branch-sigma", str(args.branch_sigma)] if args.branch_sigma is not None else []
            cmd += ["--carry", args.carry, "--omega", str(args.omega)]
            cmd += ["--control", args.control] if args.control is not None else []
            cmd += ["--follow", str(args.follow)] if args.follow is not None else []
            cmd += ["--freedom", str(args.freedom)] if args.freedom is not None else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            peaks[n] = json.loads(out.strip().splitlines()[-1])
            print(f"phased, {n} frames: peak memory rise {peaks[n]['peak_mem_mib']:.1f} MiB, "
                  f"time {peaks[n]['time_s']:.1f} s; process memory peak per tenth of the run (MiB): "
                  f"{' '.join(f'{v:.0f}' for v in peaks[n]['rss_peak_by_tenth_mib'])}")  # fmt: skip
            print(f"phased, {n} frames: join smoothness {peaks[n]['join_smoothness']:.3f}, join motion "
                  f"{peaks[n]['join_motion']:.3f} (against seam-wide stretches: "
                  f"{peaks[n]['join_smoothness_stretch']:.3f}, {peaks[n]['join_motion_stretch']:.3f}), "
                  f"{peaks[n]['frame_evaluations']} UNet frame-evals")
            print_pace(peaks[n])
        a, b = peaks[args.frames]["peak_mem_mib"], peaks[args.long_frames]["peak_mem_mib"]
        print(f"peak memory {args.long_frames} / {args.frames} frames: {b / a:.2f}x "
              f"(target <= 1.3x: {'met' if b <= 1.3 * a else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
