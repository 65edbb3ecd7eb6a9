"""Warp-guided control on the tiny Wan backbone: the held region is the warp reference noised to each level
(flow matching: (1 - t) r + t n) while the hold lasts and runs free after it, and every long-video method
holds each window to its own part of the reference; with either sampler a Wan scheduler names (Euler, and
the multistep UniPC, whose history and corrector must keep the held region exact too)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

SIZE = 32
FRAMES = 9  # video frames: 3 latent frames


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["euler", "unipc"])
def backbone(request):
    from stillmotion.diffusion.wan import WanBackbone
    from stillmotion.diffusion.wan_tiny import tiny_wan_components

    with torch.random.fork_rng(devices=[]):
        return WanBackbone(**tiny_wan_components("wan2.2", scheduler=request.param))


def _inputs():
    rng = np.random.default_rng(3)
    image = (rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    field = np.zeros((SIZE, SIZE, 2), np.float32)
    field[8:24, 8:24, 0] = 1.5  # a square moving right
    return image, field


def _guided(backbone, frames, follow, freedom, **kw):
    from stillmotion.diffusion.warp_guidance import WarpGuidance, warp_guided

    image, field = _inputs()
    prepared = backbone.prepare(image, field, num_frames=frames, width=SIZE, height=SIZE,
                                max_sequence_length=16, prompt="water flows", guidance_scale=3.0,
                                **kw)  # fmt: skip
    guided = warp_guided(backbone, prepared, WarpGuidance(follow=follow, freedom=freedom), loop=False)
    return guided.denoiser, prepared.denoiser


def test_held_region_is_the_reference_noised_to_each_level_then_runs_free(backbone):
    from stillmotion.sampling.base import sample_ode
    from stillmotion.sampling.parameterization import FlowMatching

    steps = 10
    g, den = _guided(backbone, FRAMES, follow=0.5, freedom=0.8)
    assert isinstance(g.parameterization, FlowMatching)
    sigmas = g.set_schedule(steps)
    start, end = g.guidance.start_step(steps), g.guidance.hold_end(steps)
    assert (start, end) == (2, 6)
    unit = torch.randn(den.latent_shape(den.num_frames), generator=torch.Generator().manual_seed(1))
    x = g.start_latents(unit * den.init_noise_sigma)
    ref = g.ref.window(0, den.num_frames)
    states = [x]
    names = {"FlowMatchEulerDiscreteScheduler": "euler", "UniPCMultistepScheduler": "unipc"}
    assert g.solver.name == names[type(backbone.scheduler).__name__]
    sample_ode(g, x, sigmas, callback=lambda i, x_, x0: states.append(x_))  # the scheduler's sampler
    m = g.hold.expand_as(x) >= 0.999  # latent cells wholly inside the moving square
    free = g.hold.expand_as(x) <= 0.001
    assert m.any() and free.any()
    for k, state in enumerate(states):
        t = float(sigmas[k])
        noised = (1 - t) * ref + t * unit
        if start + k <= end:
            assert torch.allclose(state[m], noised[m], atol=1e-4), k
        else:
            assert (state[m] - noised[m]).abs().max() > 1e-3, k
        if k > 0:
            assert (state[free] - noised[free]).abs().max() > 1e-3
    assert g.held_calls == end - start


@pytest.mark.parametrize("method", ["phased", "direct", "freenoise", "gen-l-video"])
def test_every_long_method_holds_each_window_to_its_own_part_of_the_reference(backbone, method):
    from stillmotion.diffusion.wan import latent_frames
    from stillmotion.sampling.frame_noise import FrameNoise
    from stillmotion.sampling.long import LongOptions, sample_long

    frames = 100  # 26 latent frames: more than one 21-frame window
    g, den = _guided(backbone, frames, follow=1.0, freedom=0.7)
    n = latent_frames(frames)
    sigmas = g.set_schedule(10)  # 7 steps from the start level; phased redoes the last one per segment
    noise = g.start_noise(FrameNoise(n, den.latent_shape(1)[2:], seed=4))
    opts = LongOptions(method=method, omega=0.3 if method == "phased" else 0.2)
    finals: list[tuple[int, int]] = []  # windows whose last step ran in the pass the chunks come from
    last_sigma = float(sigmas[-2])
    inner = g.denoiser

    yielded = [False]

    def spy(x, sigma, frames=None, **cond):
        if abs(float(sigma) - last_sigma) < 1e-9:
            if yielded[0]:  # a new pass after chunks came out: those windows are done with
                finals.clear()
                yielded[0] = False
            finals.append((frames.start, frames.stop))
        return inner(x, sigma, frames=frames, **cond)

    g.denoiser = spy
    hook = den.windowed_temporal_attention(21, opts.window_stride(21)) if method == "freenoise" else None
    gen = torch.Generator().manual_seed(0)
    chunks = sample_long(opts, g, noise, sigmas, clip_len=den.clip_frames, generator=gen,
                         condition_on=lambda last, i: {})  # fmt: skip
    seen = torch.zeros(n, dtype=torch.bool)
    checked = 0
    with hook if hook is not None else _null():
        for chunk in chunks:
            f = chunk.latents.shape[1]
            # held to the end: each frame's moving region is the reference of the window(s) it was finished
            # in (their mean where windows are averaged), not another window's or segment 1's picture
            expected = torch.zeros_like(chunk.latents)
            count = torch.zeros(f)
            for a, b in finals:
                lo, hi = max(a, chunk.start), min(b, chunk.start + f)
                if lo < hi:
                    expected[:, lo - chunk.start : hi - chunk.start] += g.ref.window(a, b)[:, lo - a : hi - a]
                    count[lo - chunk.start : hi - chunk.start] += 1
            yielded[0] = True
            assert bool((count > 0).all())
            expected = expected / count.view(1, f, 1, 1, 1)
            held = g.hold.expand_as(chunk.latents) >= 0.999
            assert torch.allclose(chunk.latents[held], expected[held], atol=1e-4)
            seen[chunk.start : chunk.start + f] = True
            checked += 1
    assert seen.all() and checked >= 1


class _null:
    def __enter__(self):
        return 0

    def __exit__(self, *exc):
        return False
