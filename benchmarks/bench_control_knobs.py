"""Warp-guided control's two knobs, measured: how the figures move with --follow and --freedom, and the
pictures of their effect in docs/diffusion-engine.md.

    .venv/bin/python benchmarks/bench_control_knobs.py [--model plain] [--photos 0000023,0000658]
        [--follow 0,0.5,0.75,1] [--freedom 0.4,0.6,0.8,1] [--images docs/images]

Photos: StyleCineGAN photos the shipped models were trained on (not the held-out ones
benchmarks/bench_embedded.py reports on, so the defaults are not tuned on its photos), with three arrows
read off each photo's real motion field, the requested mean speed in the arrow regions scaled to
``--speed`` px/frame at the working size (as bench_embedded does). One clip of the model's length
through the engine (``animate_diffusion``, --control warp-guided, forward reference, same seed).

The sweep varies one knob at a time around the defaults (``--follow`` values at the default
freedom, then ``--freedom`` values at the default follow), or with ``--grid`` every pair, and prints,
per setting and averaged over the photos, the figures of bench_embedded: cosine and speed ratio in the
arrow regions, still change, warp error (x 1000, lower = steadier) and seconds per clip. With
``--images`` it writes one PNG strip per knob (``control-follow.png``, ``control-freedom.png``): for the
first photo, one row per value of the knob at the other knob's default, with frames 0, 5, 10 and 15 and
the mean measured motion as a colour wheel (hue = direction, saturation = speed), the warp engine's own
row on top.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_embedded as be  # noqa: E402

SHOW = (0, 5, 10, 15)
TILE = 128  # px: the pictures' tile height at most


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def strip_rows(rows: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> None:
    """One row per setting: the shown frames and the measured mean motion, a label above each row."""
    import cv2

    from stillmotion.io.atomic import atomic_path
    from stillmotion.motion.viz import flow_to_color

    pictures = []
    for label, video, flow in rows:
        h, w = video.shape[1:3]
        tiles = [video[min(i, len(video) - 1)] for i in SHOW] + [flow_to_color(flow)]
        if h > TILE:  # small pictures for the docs
            tiles = [cv2.resize(t, (round(w * TILE / h), TILE), interpolation=cv2.INTER_AREA) for t in tiles]
        row = np.concatenate([np.pad(t, ((0, 0), (0, 4), (0, 0)), constant_values=255) for t in tiles], 1)
        band = np.full((18, row.shape[1], 3), 255, np.uint8)
        cv2.putText(band, label, (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        pictures += [band, row]
    sheet = np.concatenate(pictures, 0)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), sheet[..., ::-1].copy()):
            raise OSError(f"could not write {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="plain", help="model (default: the plain model)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--photos", default="0000023,0000658", help="StyleCineGAN ids (training photos)")
    parser.add_argument("--follow", default="0,0.5,0.75,1", help="--follow values (at the default freedom)")
    parser.add_argument("--freedom", default="0.4,0.6,0.8,1", help="--freedom values (at the default follow)")
    parser.add_argument("--speed", type=float, default=1.0, help="requested mean speed, px/frame")
    parser.add_argument("--frames", type=int, default=None, help="default: the model's clip length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=Path, default=None, help="write the PNG strips into this folder")
    parser.add_argument("--grid", action="store_true",
                        help="every --follow value with every --freedom value (default: one knob at a time)")
    args = parser.parse_args()

    import torch

    from stillmotion import api
    from stillmotion.diffusion.preprocess import fit_field, fit_image, fit_mask
    from stillmotion.diffusion.warp_guidance import DEFAULT_FOLLOW, DEFAULT_FREEDOM
    from stillmotion.engines.diffusion import load_pipeline, model_defaults, model_path, model_size

    torch.set_grad_enabled(False)
    pipe = load_pipeline(args.model)
    steps = int(model_defaults(model_path(args.model)).get("steps", 25))
    frames = args.frames or int(pipe.unet.config.num_frames)
    if args.grid:  # every follow with every freedom
        settings = [("grid", fo, fr) for fr in _floats(args.freedom) for fo in _floats(args.follow)]
    else:
        settings = [("follow", v, DEFAULT_FREEDOM) for v in _floats(args.follow)]
        settings += [("freedom", DEFAULT_FOLLOW, v) for v in _floats(args.freedom)]
    print(f"model {args.model}: {frames} frames, {steps} steps, defaults follow {DEFAULT_FOLLOW:g} freedom "
          f"{DEFAULT_FREEDOM:g}, photos {args.photos}, requested speed {args.speed:g} px/frame", flush=True)
    figures: dict[tuple, list[dict]] = {s: [] for s in settings}
    seconds: dict[tuple, list[float]] = {s: [] for s in settings}
    warp_figures: list[dict] = []
    strips: dict[str, list] = {"follow": [], "freedom": []}
    started = time.perf_counter()
    for k, sid in enumerate(p.strip() for p in args.photos.split(",")):
        item = be.stylecinegan_input(args.data, sid)
        scene, drawn = api.prepare(item["image"], item["arrows"], mask=item["mask"])
        w, h = model_size(pipe, scene.width, scene.height)
        mask, image = fit_mask(scene.mask, w, h), fit_image(scene.image, w, h)
        field = drawn * np.float32(args.speed / be.region_speed(fit_field(drawn, w, h), mask))
        requested = fit_field(field, w, h)
        warp = api.animate(image, motion=requested, mask=mask, engine="warp", frames=frames, loop=False)
        warp_figures.append(be.control_figures(warp, requested, mask, image))
        if k == 0:
            for knob in strips:
                strips[knob].append(("warp engine", warp, be.measured_flow(warp)))
        runs: dict[tuple, tuple] = {}  # the default setting is in both sweeps: run once
        for setting in settings:
            knob, follow, freedom = setting
            if (follow, freedom) not in runs:
                t0 = time.perf_counter()
                video, _ = be.run_engine(
                    scene, field, model=args.model, control="warp-guided", frames=frames, steps=steps,
                    seed=args.seed, follow=follow, freedom=freedom,
                )
                runs[(follow, freedom)] = (video, time.perf_counter() - t0,
                                           be.control_figures(video, requested, mask, image))  # fmt: skip
            video, took, figs = runs[(follow, freedom)]
            seconds[setting].append(took)
            figures[setting].append(figs)
            if k == 0:  # a knob's strip: its values at the other knob's default
                label = f"follow {follow:g}, freedom {freedom:g}"
                for name, other, default in (("follow", freedom, DEFAULT_FREEDOM),
                                             ("freedom", follow, DEFAULT_FOLLOW)):  # fmt: skip
                    if knob in (name, "grid") and other == default:
                        strips[name].append((label, video, be.measured_flow(video)))
        print(f"  {sid}: done ({time.perf_counter() - started:.0f} s)", flush=True)

    print()
    print("| knob | follow | freedom | cosine | speed ratio | speed ratio, whole region | still change /255 "
          "| warp error x1000 | s/clip |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    w_m = {k: float(np.mean([f[k] for f in warp_figures])) for k in warp_figures[0]}
    print(f"| warp engine | - | - | {w_m['cosine']:.3f} | {w_m['speed'] / w_m['requested_speed']:.2f} "
          f"| {w_m['whole_region_ratio']:.2f} | {w_m['still']:.2f} | {w_m['warp_error']:.2f} | - |")
    for setting in settings:
        knob, follow, freedom = setting
        m = {k: float(np.mean([f[k] for f in figures[setting]])) for k in figures[setting][0]}
        ratio = m["speed"] / m["requested_speed"]
        print(f"| {knob} | {follow:g} | {freedom:g} | {m['cosine']:.3f} | {ratio:.2f} "
              f"| {m['whole_region_ratio']:.2f} | {m['still']:.2f} | {m['warp_error']:.2f} "
              f"| {np.mean(seconds[setting]):.1f} |")
    if args.images is not None:
        args.images.mkdir(parents=True, exist_ok=True)
        for knob, rows in strips.items():
            if len(rows) < 2:
                print(f"no {knob} strip: no setting with the other knob at its default")
                continue
            strip_rows(rows, args.images / f"control-{knob}.png")
            print(f"wrote {args.images / f'control-{knob}.png'}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
