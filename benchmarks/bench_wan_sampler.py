"""How close Euler and UniPC get to the exact sample of a Wan model in few steps (tiny components). Prints
its figures.

    .venv/bin/python benchmarks/bench_wan_sampler.py [--steps 4,8,16] [--reference-steps 400] [--shift 3]
        [--frames 9] [--size 32] [--against-diffusers]

The Wan 2.1 image-to-video layout with RANDOM tiny weights (diffusers' test sizes) built in-process, once
with FlowMatchEulerDiscreteScheduler and once with UniPCMultistepScheduler in the released checkpoints'
settings (same weights, same flow shift), sampled through the project's samplers exactly as the engine
does for one clip (``sample_ode``: the scheduler's sampler on its own levels), guidance 5, one seed. Both
integrate the same probability-flow ODE from the same noise, so its solution is the target: the reference
is UniPC with ``--reference-steps`` steps, and the Euler solution with as many steps is printed beside it
as the reference's own uncertainty. Errors are on decoded frames in [0, 1] (max and mean absolute
difference). The pictures are not meaningful (random weights); the solver error is real.

``--against-diffusers`` first prints, for the Wan 2.1, Wan 2.2 A14B (two experts) and TI2V-5B layouts with
the UniPC scheduler, the largest difference of the project's frames from diffusers' WanImageToVideoPipeline
with the same components, inputs and seed (what tests/test_wan_backbone.py bounds by 1e-4).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _frames(backbone, prepared, steps: int, seed: int) -> np.ndarray:
    from stillmotion.sampling.base import sample_ode

    den = prepared.denoiser
    sigmas = den.set_schedule(steps)
    x = backbone.initial_latents(den, generator=torch.Generator().manual_seed(seed))
    x = sample_ode(den, x, sigmas)
    return np.concatenate(list(backbone.decode(prepared, x, 2)), axis=1)


def against_diffusers(args: argparse.Namespace) -> None:
    import types

    import diffusers.pipelines.wan.pipeline_wan_i2v as wan_i2v
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    from stillmotion.diffusion.wan import WanBackbone
    from stillmotion.diffusion.wan_tiny import tiny_wan_components

    # diffusers' prompt cleaning calls ftfy, which may be absent; its identity on plain ASCII (as the tests)
    wan_i2v.ftfy = types.SimpleNamespace(fix_text=lambda text: text)
    image = (np.random.default_rng(0).random((args.size, args.size, 3)) * 255).astype(np.uint8)
    cases = (("wan2.1", 9, 5, {}), ("wan2.2", 13, 4, {"guidance_scale_2": 2.5}), ("ti2v", 9, 5, {}))
    for variant, frames, steps, extra in cases:
        parts = tiny_wan_components(variant, shift=args.shift, scheduler="unipc")
        kw = {"prompt": "water flows", "negative_prompt": "blurry", "guidance_scale": 4.0, **extra}
        pipe = WanImageToVideoPipeline(**parts)
        pipe.set_progress_bar_config(disable=True)
        theirs = pipe(
            image=Image.fromarray(image), height=args.size, width=args.size, num_frames=frames,
            num_inference_steps=steps, generator=torch.Generator().manual_seed(args.seed),
            max_sequence_length=16, output_type="np", **kw,
        ).frames  # fmt: skip
        backbone = WanBackbone(**parts)
        prepared = backbone.prepare(image, num_frames=frames, width=args.size, height=args.size,
                                    max_sequence_length=16, **kw)  # fmt: skip
        ours = _frames(backbone, prepared, steps, args.seed)
        print(f"{variant}: {frames} frames, {steps} UniPC steps: max |ours - diffusers| = "
              f"{np.abs(ours - theirs).max():.2e} on [0, 1] frames", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="4,8,16", help="comma list of step counts to compare")
    ap.add_argument("--reference-steps", type=int, default=400)
    ap.add_argument("--shift", type=float, default=3.0, help="flow shift (480P Wan: 3)")
    ap.add_argument("--frames", type=int, default=9, help="video frames (one clip)")
    ap.add_argument("--size", type=int, default=32, help="square side in pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--against-diffusers", action="store_true", help="first compare with diffusers' pipeline")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.against_diffusers:
        against_diffusers(args)

    from stillmotion.diffusion.wan import WanBackbone
    from stillmotion.diffusion.wan_tiny import tiny_wan_components

    image = (np.random.default_rng(0).random((args.size, args.size, 3)) * 255).astype(np.uint8)
    runs = {}
    for kind in ("euler", "unipc"):
        backbone = WanBackbone(**tiny_wan_components("wan2.1", shift=args.shift, scheduler=kind))
        prepared = backbone.prepare(
            image, num_frames=args.frames, width=args.size, height=args.size, max_sequence_length=16,
            prompt="water flows", guidance_scale=5.0,
        )  # fmt: skip
        runs[kind] = (backbone, prepared)
    t0 = time.perf_counter()
    reference = _frames(*runs["unipc"], args.reference_steps, args.seed)
    euler_ref = _frames(*runs["euler"], args.reference_steps, args.seed)
    print(f"reference: UniPC {args.reference_steps} steps ({time.perf_counter() - t0:.0f} s for both); Euler "
          f"{args.reference_steps} steps differs from it by max {np.abs(euler_ref - reference).max():.2e}, "
          f"mean {np.abs(euler_ref - reference).mean():.2e}", flush=True)  # fmt: skip
    print("| steps | Euler max | Euler mean | UniPC max | UniPC mean | Euler mean / UniPC mean |")
    print("|---|---|---|---|---|---|")
    for steps in (int(s) for s in args.steps.split(",")):
        err = {k: np.abs(_frames(*runs[k], steps, args.seed) - reference) for k in runs}
        e, u = err["euler"], err["unipc"]
        print(f"| {steps} | {e.max():.4f} | {e.mean():.5f} | {u.max():.4f} | {u.mean():.5f} | "
              f"{e.mean() / u.mean():.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
