"""Euler against UniPC on a probability-flow ODE whose solution is known, on the levels of both Wan
schedulers; and the project's UniPC frames against diffusers' Wan pipeline. Prints its figures.

    .venv/bin/python benchmarks/bench_sampler.py [--steps 4,8,16,32] [--shift 3] [--against-diffusers]

Accuracy: data N(0.7, 0.5^2) in flow matching (``x_t = (1 - t) x0 + t n``), whose exact x0 estimate
(the posterior mean) is the denoiser, so the ODE's endpoint from unit noise z is exactly ``0.7 + 0.5 z``
(100 000 draws, float64). Each solver runs from the exact state at the first level on the levels of
FlowMatchEulerDiscreteScheduler and of UniPCMultistepScheduler with the released Wan settings (flow shift
``--shift``; FlowMatchEuler's levels end at ``shift(1/1000)``, UniPC's jump from ``shift(1/T)`` to 0 in the
last step); the mean absolute error of the endpoint is printed. A toy with a smooth estimate: it shows the
solvers' and schedules' accuracy, not a real model's pictures (the tiny random Wan is no testbed for this:
its estimate changes with the flow time on a scale of a thousandth, so no solver converges at a practical
step count).

``--against-diffusers`` also prints, for the tiny Wan 2.1, Wan 2.2 A14B (two experts) and TI2V-5B layouts
with the UniPC scheduler, the largest difference of the project's frames from diffusers'
WanImageToVideoPipeline with the same components, inputs and seed (what tests/test_wan_backbone.py bounds
by 1e-4).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def _frames(backbone, prepared, steps: int, seed: int) -> np.ndarray:
    from stillmotion.sampling.base import sample_ode

    den = prepared.denoiser
    sigmas = den.set_schedule(steps)
    x = backbone.initial_latents(den, generator=torch.Generator().manual_seed(seed))
    x = sample_ode(den, x, sigmas)  # the scheduler's own sampler, as the engine runs one clip
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


MU, SD = 0.7, 0.5


class _Gaussian:
    """The exact flow-matching denoiser of N(MU, SD^2) data, with a solver."""

    def __init__(self, solver) -> None:
        from stillmotion.sampling.parameterization import FlowMatching

        self.parameterization = FlowMatching()
        self.solver = solver

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **_) -> torch.Tensor:
        a, t = 1 - float(t), float(t)
        return MU + a * SD**2 / (a * a * SD**2 + t * t) * (x - a * MU)


def accuracy(args: argparse.Namespace) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    from stillmotion.sampling.base import EULER, sample_ode
    from stillmotion.sampling.unipc import UniPC

    z = torch.randn(100_000, dtype=torch.float64, generator=torch.Generator().manual_seed(args.seed))
    exact = MU + SD * z
    print(f"mean |x - exact| at the end, N({MU}, {SD}^2) data, flow shift {args.shift:g}:")
    print("| steps | Euler, FlowMatchEuler's levels | UniPC, FlowMatchEuler's levels | Euler, UniPC's levels "
          "| UniPC, UniPC's levels |")  # fmt: skip
    print("|---|---|---|---|---|")
    for steps in (int(s) for s in args.steps.split(",")):
        euler_sched = FlowMatchEulerDiscreteScheduler(shift=args.shift)
        unipc_sched = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=args.shift, solver_order=2,
            solver_type="bh2", predict_x0=True, lower_order_final=True,
        )  # fmt: skip
        cells = []
        for sched in (euler_sched, unipc_sched):
            sched.set_timesteps(steps)
            levels = sched.sigmas.double()
            s0 = float(levels[0])
            start = (1 - s0) * MU + ((1 - s0) ** 2 * SD**2 + s0**2) ** 0.5 * z  # the exact state there
            for solver in (EULER, UniPC()):
                end = sample_ode(_Gaussian(solver), start, levels)
                cells.append(f"{(end - exact).abs().mean().item():.2e}")
        print(f"| {steps} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="4,8,16,32", help="comma list of step counts")
    ap.add_argument("--shift", type=float, default=3.0, help="flow shift (480P Wan: 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=32, help="--against-diffusers: square side in pixels")
    ap.add_argument("--against-diffusers", action="store_true", help="also compare with diffusers' pipeline")
    args = ap.parse_args()
    torch.set_num_threads(1)
    accuracy(args)
    if args.against_diffusers:
        against_diffusers(args)


if __name__ == "__main__":
    main()
