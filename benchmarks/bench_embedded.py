"""Motion control of the bundled model on photos it never saw: its table in docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_embedded.py [--model DIR] [--data ../shared/data] [--steps N]
        [--plain DIR] [--rows "full model,bundled + warp-guided,plain model alone,plain + warp-guided"]
        [--follow F] [--freedom F]

Inputs (none used in training, see scripts/train_tiny.py): the cinemagraphy3d
waterfall and seascape painting with their user-drawn LabelMe arrows and masks, and the held-out
StyleCineGAN photos 0002268 and 0000008 with their masks and three arrows read off their real motion
fields (at the field's fastest masked points). Every method makes one base clip (``--frames``,
default the model's clip length) of each input at the engine's working size, same seed.

Speed: the arrows as drawn ask for ~0.3 px/frame at the model's 128-px working size (4 px over a clip),
less than the noise of a small model's frames; each input's field is therefore scaled so the requested
mean speed in its arrow regions is ``--speed`` px/frame (default 1.0; the training clips move 0.75-3.5),
and one more row gives the full model on the arrows as drawn.

Figures per method (mean over the inputs):
- cosine: mean cosine between the requested motion (the dense arrow field at the working size) and
  the motion measured in the output (flow of consecutive frames read by the fine-flow meter,
  stillmotion.evaluation.motion_metrics.fine_flow, averaged over the clip), over the arrow regions'
  interior: masked pixels where the requested speed is >= 25% of its peak, at least ``EDGE`` px inside
  the mask (the whole arrow region where that leaves nothing);
- speed: measured mean speed there (px/frame), and the ratio to the requested one;
- previous meter: cosine / speed ratio read by the project's DIS at the working size (the meter
  these rows had before), same region: on a thin mask its patches and smoothness pass take in the still
  pixels around, and on a small model's decoded frames (blurred, on a fixed 8-px block grid) it reads
  a translation low;
- speed ratio, whole region: the same over the whole arrow region, mask edge included. Rows of known
  motion check the meter: ``meter check`` (the photo's masked region translated by exactly 1 px/frame
  along the arrows' mean direction, the rest still) and ``meter check through the autoencoder`` (those
  frames encoded and decoded by the model's autoencoder, the still region pasted back as the decode
  does: what the model's frames can hold of that motion); ``warp engine through the autoencoder``
  does the same to the warp engine's clip (the reference warp-guided control holds to);
- still: mean absolute change against the input outside the mask, in 1/255 units (target <= 4);
- strength: measured speed of the full model at --strength 0.5, 1, 1.5, 2 (must rise monotonically).

- warp error: the eval runner's frame-quality figure (Lai et al. 2018: frame t+1 warped back to t by
  the measured flow, squared RGB difference over consistent pixels, colours in [0, 1]; x 1000 here),
  lower = steadier frames;
- s/clip: wall time of one clip (model loading excluded).

Rows: full model (the model's trained control, --control trained), without T (--no-refine), without
motion fields (no motion features; the strength of the field is still given), without strength
(motion features, no strength term), warp engine; for a model with warped image conditioning (an
addition, stillmotion.diffusion.warp_condition) also the full model without it (the paper's
conditioning only). Control modes through the engine's own path (``animate_diffusion``, forward
reference): bundled + warp-guided (--control warp-guided), plain model alone (--model plain with its
untrained motion modules: plain image-to-video) and plain + warp-guided (--model plain, --control
auto), with --follow / --freedom when given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

STRENGTHS = (0.5, 1.0, 1.5, 2.0)
METER_CHECK = "meter check: exact 1 px/frame translation"
METER_CHECK_AE = "meter check through the autoencoder"
WARP_AE = "warp engine through the autoencoder"
KNOWN = (METER_CHECK, METER_CHECK_AE, WARP_AE)  # rows that time nothing


def heldout_inputs(data: Path) -> list[dict]:
    """(name, image, arrows, mask) of the held-out photos."""

    c3d = data / "images" / "cinemagraphy3d"
    out = []
    for stem, photo in (("0", "0_waterfall.png"), ("1", "1_seascape_painting.jpg")):
        out.append(
            {
                "name": f"cinemagraphy3d/{photo}",
                "image": c3d / photo,
                "arrows_file": c3d / f"{stem}_labelme.json",
                "mask": c3d / f"{stem}_mask.png",
            }
        )
    for sid in ("0002268", "0000008"):
        out.append(stylecinegan_input(data, sid))
    return out


def stylecinegan_input(data: Path, sid: str) -> dict:
    """A StyleCineGAN photo with its mask and three arrows read off its real motion field (the fastest
    masked point, then the fastest one far from those already taken)."""
    from stillmotion.inputs.arrows import Arrow
    from stillmotion.inputs.image import load_image
    from stillmotion.inputs.mask import load_mask

    folder = data / "images" / "stylecinegan" / sid
    image = load_image(folder / f"{sid}.png")
    mask = load_mask(folder / f"{sid}_mask.png", image.shape[1], image.shape[0])
    motion = np.load(folder / f"{sid}_motion_fp16.npz")["motion"][0].astype(np.float32)  # (2, 512, 512)
    speed = np.hypot(motion[0], motion[1])
    small_mask = load_mask(folder / f"{sid}_mask.png", 512, 512)
    speed[~small_mask] = 0
    border = 64  # arrows start inside the photo, with room for their length (fields are 512x512)
    speed[:border], speed[-border:], speed[:, :border], speed[:, -border:] = 0, 0, 0, 0
    arrows = []
    for _ in range(3):
        y, x = np.unravel_index(np.argmax(speed), speed.shape)
        vx, vy = motion[:, y, x] / max(speed[y, x], 1e-6)
        s = image.shape[1] / 512
        length = 0.12 * image.shape[1]
        x0, y0 = x * s, y * s
        # shorten the arrow where it would leave the image (the direction is what counts)
        for lim, p0, v in ((image.shape[1] - 1, x0, vx), (image.shape[0] - 1, y0, vy)):
            if v * length + p0 > lim:
                length = (lim - p0) / v
            elif v * length + p0 < 0:
                length = -p0 / v
        arrows.append(Arrow(((x0, y0), (x0 + vx * length, y0 + vy * length))))
        yy, xx = np.mgrid[:512, :512]
        speed[(yy - y) ** 2 + (xx - x) ** 2 < 120**2] = 0
    return {"name": f"stylecinegan/{sid}", "image": image, "arrows": arrows, "mask": mask}


def measured_flow(frames: np.ndarray, meter: str = "fine") -> np.ndarray:
    """Mean motion per frame of the clip, (H, W, 2): ``fine`` the meter
    (stillmotion.evaluation.motion_metrics.clip_flow), ``dis`` the previous one (the project's DIS on
    consecutive frame pairs)."""
    from stillmotion.evaluation.motion_metrics import clip_flow
    from stillmotion.motion.flow import compute_flow

    if meter == "fine":
        return clip_flow(frames)
    return np.mean([compute_flow(frames[i], frames[i + 1], method="dis") for i in range(len(frames) - 1)], 0)


def control_figures(frames: np.ndarray, requested: np.ndarray, mask: np.ndarray, image: np.ndarray,
                    regions_of: np.ndarray | None = None) -> dict:  # fmt: skip
    """The figures of one clip against the ``requested`` motion, over the arrow regions of ``regions_of``
    (default: of ``requested``)."""
    regions_of = requested if regions_of is None else regions_of
    whole = arrow_region(regions_of, mask)
    region = metered_region(regions_of, mask)
    flow = measured_flow(frames)
    f, r = flow[region], requested[region]
    cos = (f * r).sum(-1) / (np.linalg.norm(f, axis=-1) * np.linalg.norm(r, axis=-1) + 1e-6)
    whole_ratio = float(np.linalg.norm(flow[whole], axis=-1).mean()
                        / np.linalg.norm(requested[whole], axis=-1).mean())
    old = measured_flow(frames, meter="dis")[region]  # the previous meter, printed beside the new one
    old_cos = (old * r).sum(-1) / (np.linalg.norm(old, axis=-1) * np.linalg.norm(r, axis=-1) + 1e-6)
    from stillmotion.evaluation.motion_metrics import warp_error_per_frame

    still = ~mask
    change = (
        np.abs(frames.astype(np.float32) - image[None].astype(np.float32))[:, still].mean()
        if still.any()
        else 0.0
    )
    return {
        "cosine": float(cos.mean()),
        "speed": float(np.linalg.norm(f, axis=-1).mean()),
        "requested_speed": float(np.linalg.norm(r, axis=-1).mean()),
        "whole_region_ratio": whole_ratio,
        "dis_cosine": float(old_cos.mean()),
        "dis_speed": float(np.linalg.norm(old, axis=-1).mean()),
        "still": float(change),
        "warp_error": float(np.nanmean(warp_error_per_frame(frames))) * 1000,
    }


def run_engine(scene, field, *, model, control, frames, steps, seed, follow=None, freedom=None):
    """One clip through ``animate_diffusion`` (the CLI's path) with a control mode; forward reference."""
    from stillmotion.engines.diffusion import animate_diffusion

    it, stats = animate_diffusion(scene, field, frames=frames, steps=steps, seed=seed, model=model,
                                  control=control, follow=follow, freedom=freedom, loop=False)  # fmt: skip
    video = np.stack(list(it))
    return video, tuple(stats["size"])


def run_diffusion(
    pipe,
    scene,
    field,
    *,
    frames,
    steps,
    seed,
    refine,
    motion,
    strength_term,
    warped=True,
    strength=1.0,
    guidance=(1.0, 3.0),
):
    """One clip through the pipeline (the engine's path), with the ablation switches."""
    import torch

    from stillmotion.engines.diffusion import model_size
    from stillmotion.sampling.base import sample_euler

    width, height = model_size(pipe, scene.width, scene.height)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    prepared = pipe.prepare(
        scene.image,
        field * np.float32(strength) if motion else None,
        mask=scene.mask,
        num_frames=frames,
        width=width,
        height=height,
        refine=refine,
        generator=generator,
        min_guidance_scale=guidance[0],
        max_guidance_scale=guidance[1],
        strength=None if motion else _ms(field * np.float32(strength)),
    )
    den = prepared.denoiser
    if not strength_term:
        den.strength = None
    if not warped:
        den.frame_latents = None
    sigmas = den.set_schedule(steps)
    x = pipe.initial_latents(den, generator=generator)
    x = sample_euler(den, x, sigmas)
    video = np.concatenate([c[0] for c in pipe.decode(prepared, x, 8)])
    return (video * 255 + 0.5).clip(0, 255).astype(np.uint8), prepared.image, (width, height)


def arrow_region(field: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked pixels where the requested speed is >= 25% of its peak."""
    speed = np.hypot(field[..., 0], field[..., 1])
    return mask & (speed >= 0.25 * speed.max()) if speed.max() > 0 else mask


# px: half of DIS's 8-px patch (stillmotion.motion.flow.DISSettings.patch_size); nearer the mask's edge a
# patch holds still pixels too and reads the motion low (the meter check shows it)
EDGE = 4


def metered_region(field: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The arrow region's pixels at least EDGE px inside the mask (the whole arrow region if none are)."""
    import cv2

    region = arrow_region(field, mask)
    inner = cv2.erode(mask.astype(np.uint8), np.ones((2 * EDGE + 1, 2 * EDGE + 1), np.uint8),
                      borderType=cv2.BORDER_REPLICATE).astype(bool)  # fmt: skip
    return region & inner if (region & inner).any() else region


def translated_region(image: np.ndarray, field: np.ndarray, mask: np.ndarray, frames: int) -> np.ndarray:
    """uint8 (frames, H, W, 3): the photo's masked pixels translated by exactly 1 px/frame along the arrow
    region's mean direction (the whole photo shifted, wrapped around at the border, pasted in the mask),
    the rest still: frames whose motion in the mask is known, for checking the meter. Wrapping keeps the
    motion exact up to the frame's edge (the photo tiled and translated: what enters is the other side,
    moving along); a reflected border would fold there, content moving against the shift."""
    import cv2

    d = field[arrow_region(field, mask)].mean(0)
    d = d / max(float(np.linalg.norm(d)), 1e-6)
    h, w = image.shape[:2]
    out = np.empty((frames, h, w, 3), np.uint8)
    for t in range(frames):
        shift = np.float32([[1, 0, d[0] * t], [0, 1, d[1] * t]])
        out[t] = cv2.warpAffine(image, shift, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        out[t][~mask] = image[~mask]
    return out


def through_autoencoder(pipe, video: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 ``video`` encoded and decoded by the model's own autoencoder, the still region pasted back
    as the pipeline's decode does (stillmotion.diffusion.pipeline decode): what the model's frames can
    hold of these frames at best."""
    import torch

    from stillmotion.diffusion.pipeline import _accepts_num_frames
    from stillmotion.diffusion.preprocess import still_alpha

    out = np.empty_like(video)
    alpha = still_alpha(mask, pipe.vae_scale_factor)[..., None]
    ref = video[0].astype(np.float32) / 255.0  # the still region: the photo's pixels in every frame
    for i in range(0, len(video), 8):
        part = video[i : i + 8]
        x = torch.from_numpy(part.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
        z = pipe.encode_latents(x).to(pipe.vae.dtype)
        kwargs = {"num_frames": len(part)} if _accepts_num_frames(pipe.vae) else {}
        y = pipe.vae.decode(z, **kwargs).sample.float()
        y = (y / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy()
        out[i : i + 8] = ((y * (1 - alpha) + ref * alpha) * 255 + 0.5).clip(0, 255).astype(np.uint8)
    return out


def region_speed(field: np.ndarray, mask: np.ndarray) -> float:
    """Mean requested speed over the arrow regions."""
    return float(np.hypot(field[..., 0], field[..., 1])[arrow_region(field, mask)].mean())


def _ms(field: np.ndarray) -> float:
    from stillmotion.motion.strength import motion_strength

    return motion_strength(field)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--frames", type=int, default=None, help="default: the model's clip length")
    parser.add_argument("--steps", type=int, default=None, help="default: the model's own")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="only the first N inputs (quick look)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="requested mean speed in the arrow regions, px/frame at the working size")
    parser.add_argument("--rows", default=None, help="comma-separated row names to run (quick look)")
    parser.add_argument("--no-strength-levels", action="store_true", help="skip the strength levels")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--plain", default=None,
                        help="the plain model for the plain rows (default: the shipped one, --model plain)")
    parser.add_argument("--follow", type=float, default=None, help="warp-guided rows: --follow")
    parser.add_argument("--freedom", type=float, default=None, help="warp-guided rows: --freedom")
    args = parser.parse_args()
    if not (np.isfinite(args.speed) and args.speed > 0):
        parser.error(f"--speed must be a number > 0, got {args.speed}")

    import torch

    from stillmotion import api
    from stillmotion.diffusion.preprocess import fit_field, fit_image, fit_mask
    from stillmotion.engines.diffusion import (
        default_model,
        load_pipeline,
        model_defaults,
        model_path,
        model_size,
    )

    torch.set_grad_enabled(False)
    model = args.model or str(default_model())
    pipe = load_pipeline(model)
    defaults = model_defaults(model_path(model))  # a name (plain) or a folder
    steps = args.steps or int(defaults.get("steps", 25))
    guidance = (
        float(defaults.get("min_guidance_scale", 1.0)),
        float(defaults.get("max_guidance_scale", 3.0)),
    )
    frames = args.frames or int(pipe.unet.config.num_frames)
    inputs = heldout_inputs(args.data)[: args.limit]
    from stillmotion.engines.diffusion import PLAIN_MODEL_DIR

    plain = args.plain or (str(PLAIN_MODEL_DIR) if (PLAIN_MODEL_DIR / "model_index.json").is_file() else None)
    if plain is not None:  # the autoencoder rows use --model's; say whether the plain model's is the same
        own = json.loads((Path(model_path(plain)) / "vae" / "config.json").read_text())
        same = {k: v for k, v in own.items() if not k.startswith("_")} == {
            k: v for k, v in dict(pipe.vae.config).items() if not k.startswith("_")
        }
        verdict = "the same as" if same else "DIFFERENT from"
        print(f"plain model's autoencoder: {verdict} --model's", flush=True)
    print(
        f"model {model}: {frames} frames, {steps} steps, guidance {guidance}, {len(inputs)} held-out inputs, "
        f"requested speed {args.speed:g} px/frame, "
        f"refiner T {'present' if pipe.refiner is not None else 'ABSENT'}",
        flush=True,
    )
    rows = {
        "full model": dict(refine=True, motion=True, strength_term=True),
        "without T": dict(refine=False, motion=True, strength_term=True),
        "without motion fields": dict(refine=True, motion=False, strength_term=True),
        "without strength": dict(refine=True, motion=True, strength_term=False),
    }
    if getattr(pipe.motion_adapter.config, "warped_image_condition", False):
        rows["without warped conditioning"] = dict(refine=True, motion=True, strength_term=True, warped=False)
    drawn = "full model, arrows as drawn"
    rows[drawn] = dict(refine=True, motion=True, strength_term=True)
    knobs = dict(follow=args.follow, freedom=args.freedom)
    rows["bundled + warp-guided"] = dict(engine=dict(model=model, control="warp-guided", **knobs))
    if plain is not None:
        rows["plain model alone"] = dict(engine=dict(model=plain, control="trained"))
        rows["plain + warp-guided"] = dict(engine=dict(model=plain, control="auto", **knobs))
    if args.rows:
        wanted = {r.strip() for r in args.rows.split(",")}
        if wanted - set(rows):
            parser.error(f"--rows: unknown row(s) {', '.join(sorted(wanted - set(rows)))}; "
                         f"choose from {', '.join(rows)}")
        rows = {k: v for k, v in rows.items() if k in wanted}
    results: dict[str, list[dict]] = {k: [] for k in [*rows, "warp engine", WARP_AE, *KNOWN[:2]]}
    seconds: dict[str, list[float]] = {k: [] for k in results}
    levels: list[list[float]] = []
    started = time.perf_counter()
    for item in inputs:
        scene, drawn_field = api.prepare(
            item["image"], item.get("arrows", ()), arrows_file=item.get("arrows_file"), mask=item["mask"]
        )
        w, h = model_size(pipe, scene.width, scene.height)
        as_drawn = region_speed(fit_field(drawn_field, w, h), fit_mask(scene.mask, w, h))
        field = drawn_field * np.float32(args.speed / as_drawn)
        for name, switches in rows.items():
            use = drawn_field if name == drawn else field
            t0 = time.perf_counter()
            if "engine" in switches:
                video, (w, h) = run_engine(scene, use, frames=frames, steps=steps, seed=args.seed,
                                           **switches["engine"])  # fmt: skip
                image = fit_image(scene.image, w, h)
            else:
                video, image, (w, h) = run_diffusion(
                    pipe, scene, use, frames=frames, steps=steps, seed=args.seed, guidance=guidance,
                    **switches,
                )
            seconds[name].append(time.perf_counter() - t0)
            requested = fit_field(use, w, h)
            mask = fit_mask(scene.mask, w, h)
            results[name].append(control_figures(video, requested, mask, image))
        per_level = []
        for s in () if args.no_strength_levels else STRENGTHS:
            video, image, (w, h) = run_diffusion(
                pipe,
                scene,
                field,
                frames=frames,
                steps=steps,
                seed=args.seed,
                guidance=guidance,
                strength=s,
                **rows["full model"],
            )
            per_level.append(
                control_figures(video, fit_field(field, w, h) * s, fit_mask(scene.mask, w, h), image)["speed"]
            )
        if per_level:
            levels.append(per_level)
        # The warp engine gets the same fitted inputs the diffusion rows saw.
        image, requested, mask = (
            fit_image(scene.image, w, h),
            fit_field(field, w, h),
            fit_mask(scene.mask, w, h),
        )
        t0 = time.perf_counter()
        warp = api.animate(image, motion=requested, mask=mask, engine="warp", frames=frames, loop=False)
        seconds["warp engine"].append(time.perf_counter() - t0)
        results["warp engine"].append(control_figures(warp, requested, mask, image))
        known = translated_region(image, requested, mask, frames)
        d = requested[arrow_region(requested, mask)].mean(0)
        exact = np.broadcast_to(d / max(float(np.linalg.norm(d)), 1e-6), requested.shape)
        results[METER_CHECK].append(control_figures(known, exact, mask, image, regions_of=requested))
        # The same frames through the model's autoencoder: the motion is still 1 px/frame except where a
        # latent block straddles the mask's edge and mixes still pixels in.
        results[METER_CHECK_AE].append(
            control_figures(through_autoencoder(pipe, known, mask), exact, mask, image, regions_of=requested)
        )
        warp_ae = through_autoencoder(pipe, warp, mask)
        results[WARP_AE].append(control_figures(warp_ae, requested, mask, image))
        for k in KNOWN:
            seconds[k].append(0.0)
        print(f"  {item['name']}: done ({time.perf_counter() - started:.0f} s)", flush=True)

    mean_levels = np.mean(levels, axis=0) if levels else np.full(len(STRENGTHS), np.nan)
    monotone = bool(levels) and bool(np.all(np.diff(mean_levels) > 0))
    print()
    print("| method | cosine (>= 0.7) | measured speed px/frame (requested) | speed ratio "
          "| previous meter: cosine / speed ratio "
          "| speed ratio, whole region | still change /255 (<= 4) | warp error x1000 | s/clip |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for name, figs in results.items():
        m = {k: float(np.mean([f[k] for f in figs])) for k in figs[0]}
        m["seconds"] = float(np.mean(seconds[name]))
        summary[name] = m
        print(
            f"| {name} | {m['cosine']:.3f} | {m['speed']:.2f} ({m['requested_speed']:.2f}) "
            f"| {m['speed'] / m['requested_speed']:.2f} "
            f"| {m['dis_cosine']:.3f} / {m['dis_speed'] / m['requested_speed']:.2f} "
            f"| {m['whole_region_ratio']:.2f} | {m['still']:.2f} "
            f"| {m['warp_error']:.2f} "
            f"| {'-' if name in KNOWN else format(m['seconds'], '.1f')} |"
        )
    if levels:  # not with --no-strength-levels
        print()
        print("| --strength | " + " | ".join(f"{s:g}" for s in STRENGTHS) + " | monotonic |")
        print("| --- | " + " | ".join("---" for _ in STRENGTHS) + " | --- |")
        print(
            "| measured speed (full model) | "
            + " | ".join(f"{v:.2f}" for v in mean_levels)
            + f" | {'yes' if monotone else 'NO'} |"
        )
    print(f"\n{len(inputs)} inputs, {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": summary,
                    "strength_levels": dict(zip(map(str, STRENGTHS), mean_levels.tolist(), strict=True)),
                    "monotonic": monotone,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
