"""How accurately bench_embedded's meters read motion that is known: its table in docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_meter.py [--data ../shared/data] [--model DIR] [--flicker 0.1]

On the four held-out photos of benchmarks/bench_embedded.py, at the working size, 16 frames: the
photo's masked region translated by exactly 1 px/frame along the arrows' mean direction (the rest
still; bench_embedded's meter check), and the photo held still, each as it is, through the model's
autoencoder (encode + decode, still region pasted back as the decode does), and through the autoencoder
with flicker (``--flicker`` x each latent channel's std of fresh noise added to every frame's latents:
a small model's frames changing in place; the warp error column says how much). Each clip is read by
three meters over bench_embedded's metered region (the arrow regions' interior):

- previous: the project's DIS on consecutive frame pairs (bench_embedded's previous meter);
- fine, pairs: stillmotion.evaluation.motion_metrics.fine_flow on consecutive frame pairs;
- clip_flow: fine_flow on frames 4 apart, divided by 4 (bench_embedded's meter).

Printed per meter: mean speed (px/frame; truth 1 for the shift, except where a latent block straddles
the mask's edge or the pasted still pixels fade in, and 0 for the still photo) and the cosine with the
shift's direction.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_embedded as be  # noqa: E402


def with_flicker(pipe, video: np.ndarray, mask: np.ndarray, amount: float, seed: int) -> np.ndarray:
    """``video`` through the autoencoder with ``amount`` x each latent channel's std of noise per frame."""
    import torch

    from stillmotion.diffusion.preprocess import still_alpha

    x = torch.from_numpy(video.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
    z = pipe.encode_latents(x).float()
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
    z = (z + amount * noise * z.std((0, 2, 3), keepdim=True)).to(pipe.vae.dtype)
    y = pipe.vae.decode(z).sample.float()
    y = (y / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    alpha = still_alpha(mask, pipe.vae_scale_factor)[..., None]
    y = y * (1 - alpha) + video[0].astype(np.float32) / 255.0 * alpha
    return (y * 255 + 0.5).clip(0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--flicker", type=float, default=0.1, help="latent noise, x each channel's std")
    args = parser.parse_args()
    if not (np.isfinite(args.flicker) and args.flicker >= 0):
        parser.error(f"--flicker must be a number >= 0, got {args.flicker}")
    if args.frames < 5:
        parser.error(f"--frames must be at least 5, got {args.frames}")

    import torch

    from stillmotion import api
    from stillmotion.diffusion.preprocess import fit_field, fit_image, fit_mask
    from stillmotion.engines.diffusion import default_model, load_pipeline, model_size
    from stillmotion.evaluation.motion_metrics import clip_flow, fine_flow, warp_error_per_frame
    from stillmotion.motion.flow import compute_flow

    torch.set_grad_enabled(False)
    pipe = load_pipeline(args.model or str(default_model()))
    def pairs(read):
        return lambda v: np.mean([read(v[i], v[i + 1]) for i in range(len(v) - 1)], 0)

    meters = {
        "previous": pairs(lambda a, b: compute_flow(a, b, method="dis")),
        "fine, pairs": pairs(fine_flow),
        "clip_flow": clip_flow,
    }
    rows: dict[str, dict[str, list]] = {}
    inputs = be.heldout_inputs(args.data)
    for n, item in enumerate(inputs):
        scene, drawn = api.prepare(
            item["image"], item.get("arrows", ()), arrows_file=item.get("arrows_file"), mask=item["mask"]
        )
        w, h = model_size(pipe, scene.width, scene.height)
        field = fit_field(drawn, w, h)
        image, mask = fit_image(scene.image, w, h), fit_mask(scene.mask, w, h)
        region = be.metered_region(field, mask)
        d = field[be.arrow_region(field, mask)].mean(0)
        d = d / max(float(np.linalg.norm(d)), 1e-6)
        shift = be.translated_region(image, field, mask, args.frames)
        still = np.repeat(image[None], args.frames, 0)
        flicker = f"through the autoencoder, flicker {args.flicker:g}"
        clips = {
            "shift": shift,
            "shift through the autoencoder": be.through_autoencoder(pipe, shift, mask),
            f"shift {flicker}": with_flicker(pipe, shift, mask, args.flicker, n),
            f"still {flicker}": with_flicker(pipe, still, mask, args.flicker, n),
        }
        for name, video in clips.items():
            row = rows.setdefault(name, {"warp": []})
            row["warp"].append(float(np.nanmean(warp_error_per_frame(video))) * 1000)
            for meter, read in meters.items():
                f = read(video)[region]
                speed = np.linalg.norm(f, axis=-1)
                cosine = float(((f @ d) / (speed + 1e-6)).mean())
                row.setdefault(meter, []).append((float(speed.mean()), cosine))
        print(f"  {item['name']}: done", flush=True)
    print()
    print("| clip | warp error x1000 | " + " | ".join(f"{m}: speed / cosine" for m in meters) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in meters) + " |")
    for name, row in rows.items():
        cells = [f"{np.mean([s for s, _ in row[m]]):.2f} / {np.mean([c for _, c in row[m]]):.3f}"
                 for m in meters]  # fmt: skip
        print(f"| {name} | {np.mean(row['warp']):.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
