"""The long-video samplers on the real (tiny, random) StillMotionPipeline: lengths, counters, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stillmotion.engines.long_video import stream_long_video
from stillmotion.sampling.long import LONG_METHODS, LongOptions, expected_cost

pytest.importorskip("diffusers")

CLIP, N, STEPS = 4, 9, 2


@pytest.fixture(scope="module")
def pipe():
    from stillmotion.diffusion.pipeline import StillMotionPipeline
    from stillmotion.diffusion.tiny import tiny_components

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny kernels: threads only add contention on a shared machine
    yield StillMotionPipeline(**tiny_components(0, num_frames=CLIP))
    torch.set_num_threads(threads)


def prepared(pipe, seed: int = 0, frames: int = N):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)
    field = np.zeros((16, 24, 2), np.float32)
    field[..., 0] = 1.0
    return pipe.prepare(image, field, num_frames=frames, width=24, height=16,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip


def run(pipe, method: str, seed: int = 0, frames: int = N, carry: str = "motion"):
    prep = prepared(pipe, seed, frames)
    den = prep.denoiser
    options = LongOptions(method=method, gamma=0.5, carry=carry)
    out = list(stream_long_video(pipe, prep, options, steps=STEPS, seed=seed))
    video = np.concatenate([f for f, _ in out], axis=1)
    return video, den, [j for _, j in out]


@pytest.mark.parametrize("method", LONG_METHODS)
def test_pipeline_long_video_lengths_and_counters(pipe, method):
    video, den, _ = run(pipe, method)
    assert video.shape == (1, N, 16, 24, 3) and np.isfinite(video).all()
    cost = expected_cost(LongOptions(method=method, gamma=0.5), N, CLIP, STEPS)
    # classifier-free guidance runs every frame twice
    assert den.unet_calls == cost.denoiser_calls
    assert den.frame_evaluations == 2 * cost.frame_passes


def test_pipeline_same_seed_same_video(pipe):
    a, _, joins = run(pipe, "phased", seed=1)
    b, _, _ = run(pipe, "phased", seed=1)
    c, _, _ = run(pipe, "phased", seed=2)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert joins[0] == 0 and any(joins)


def test_which_models_follow_the_motion_reference(pipe):
    from stillmotion.diffusion.warp_guidance import WarpGuidance, warp_guided
    from stillmotion.engines.long_video import follows_reference

    prep = prepared(pipe)
    den = prep.denoiser
    # the tiny random model's motion modules are untrained and it has no warped conditioning: the field
    # reaches it nowhere, though a reference exists (the photo warped for the carry alone)
    assert not pipe.motion_modules_trained and den.frame_latents is None and den.flows is None
    assert den.reference(0, CLIP) is not None
    assert not follows_reference(den)
    guided = warp_guided(pipe, prep, WarpGuidance(), loop=False).denoiser
    assert follows_reference(guided)  # held to the reference


def test_engine_continues_a_model_without_motion_input_with_its_own_motion(pipe):
    # carry "motion" on a model that gets no motion input is the own carry, not the reference one
    auto, _, _ = run(pipe, "phased", carry="motion")
    own, _, _ = run(pipe, "phased", carry="own")
    reference, _, _ = run(pipe, "phased", carry="reference")
    assert np.array_equal(auto, own)
    assert not np.allclose(own[:, CLIP:], reference[:, CLIP:], atol=1e-3)
    assert np.array_equal(own[:, :CLIP], reference[:, :CLIP])  # segment 1 is the same either way
