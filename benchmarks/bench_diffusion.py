"""The motion modules' cost and the zero-init equivalence, on tiny SVD components on this CPU.

    .venv/bin/python benchmarks/bench_diffusion.py [--size 64] [--frames 8] [--repeats 5]

1. Zero-init equivalence: diffusers' StableVideoDiffusionPipeline vs StillMotionPipeline (motion field
   given, new modules at zero) on the same components, inputs and seed: max abs difference of frames.
2. Cost of one denoiser call (UNet with classifier-free guidance, ``--frames`` frames at
   ``--size`` px): stock SVD conditioning (no motion), with a motion field (features cached per
   window, the sampling case), and with the motion encoder re-run every call. Calls are interleaved
   and the median over ``--repeats`` rounds is reported, with ratios to stock (the machine is shared,
   so ratios within one run are the figure to trust).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from diffusers import StableVideoDiffusionPipeline
    from PIL import Image

    from stillmotion.diffusion.pipeline import StillMotionPipeline
    from stillmotion.diffusion.tiny import tiny_components

    parts = tiny_components(0, num_frames=args.frames)
    s = args.size
    yy, xx = np.mgrid[0:s, 0:s]
    image = np.stack([xx * 3, yy * 3, (xx + yy) * 2], -1).clip(0, 255).astype(np.uint8)
    field = np.zeros((s, s, 2), np.float32)
    field[..., 0] = 1.5

    svd = StableVideoDiffusionPipeline(**{k: parts[k] for k in ("vae", "image_encoder", "unet", "scheduler",
                                                                  "feature_extractor")})  # fmt: skip
    svd.set_progress_bar_config(disable=True)
    kw = dict(width=s, height=s, num_frames=args.frames, num_inference_steps=2, decode_chunk_size=args.frames)
    ref = svd(
        Image.fromarray(image), generator=torch.Generator().manual_seed(0), output_type="np", **kw
    ).frames
    pipe = StillMotionPipeline(**parts)
    ours = pipe(image, field, generator=torch.Generator().manual_seed(0), **kw).frames
    print(f"zero-init equivalence ({args.frames} frames, {s}x{s}, 2 steps): "
          f"max |ours - diffusers SVD| = {np.abs(ours - ref).max():.3g}")  # fmt: skip

    with torch.no_grad():  # trained-like weights so the motion path does real work
        for p in pipe.motion_adapter.parameters():
            p.normal_(0, 0.1)
    den_stock = pipe.prepare(image, None, num_frames=args.frames, width=s, height=s).denoiser
    den_motion = pipe.prepare(image, field, num_frames=args.frames, width=s, height=s).denoiser
    den_nocache = pipe.prepare(image, field, num_frames=args.frames, width=s, height=s).denoiser
    den_nocache.feature_cache_size = 0
    sigmas = den_stock.set_schedule(25)
    x = (
        torch.randn(den_stock.latent_shape(args.frames), generator=torch.Generator().manual_seed(1))
        * sigmas[3]
    )
    timings: dict[str, list[float]] = {"stock": [], "motion": [], "motion, encoder every call": []}
    dens = {"stock": den_stock, "motion": den_motion, "motion, encoder every call": den_nocache}
    for den in dens.values():
        den(x, sigmas[3])  # warm-up (and fills the feature cache)
    for _ in range(args.repeats):
        for name, den in dens.items():
            t0 = time.perf_counter()
            den(x, sigmas[3])
            timings[name].append(time.perf_counter() - t0)
    base = statistics.median(timings["stock"])
    print(f"denoiser call, {args.frames} frames {s}x{s}, guidance on (median of {args.repeats}, "
          f"torch threads {torch.get_num_threads()}):")  # fmt: skip
    for name, ts in timings.items():
        med = statistics.median(ts)
        print(f"  {name:28s} {med * 1000:8.1f} ms   x{med / base:.2f}")


if __name__ == "__main__":
    main()
