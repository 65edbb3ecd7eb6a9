"""Warp-guided control's mechanism on a toy denoiser: the dual-clock hold, the start level, the knobs'
extremes and every long-video method's frame ranges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stillmotion.diffusion.warp_guidance import (
    ReferenceStart,
    WarpGuidance,
    WarpGuidedDenoiser,
    hold_region,
    resolve_control,
)
from stillmotion.errors import UserInputError
from stillmotion.sampling import LongOptions, sample_euler, sample_long
from stillmotion.sampling.frame_noise import FrameNoise, TensorNoise

C, H, W = 2, 4, 6


class ToyDenoiser:
    """x0 = a frame-dependent pull of x toward a fixed clean video (not the reference)."""

    def __init__(self, num_frames: int, steps_sigma_max: float = 80.0):
        self.num_frames = num_frames
        g = torch.Generator().manual_seed(7)
        self.clean = torch.randn(1, num_frames, C, H, W, generator=g)
        self.sigma_max = steps_sigma_max
        self.init_noise_sigma = (steps_sigma_max**2 + 1) ** 0.5
        self.calls: list[tuple[int, int, float]] = []

    def set_schedule(self, steps: int) -> torch.Tensor:
        rho, lo, hi = 7.0, 0.002, self.sigma_max
        ramp = torch.linspace(0, 1, steps)
        sig = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        return torch.cat([sig, torch.zeros(1)]).float()

    def __call__(self, x, sigma, frames=None, **cond):
        a = 0 if frames is None else frames.start
        s = float(sigma)
        self.calls.append((a, a + x.shape[1], s))
        clean = self.clean[:, a : a + x.shape[1]]
        return (x + s**2 * clean) / (1 + s**2)


class ToyReference:
    loop = False

    def __init__(self, num_frames: int):
        g = torch.Generator().manual_seed(3)
        # a reference that differs frame by frame, so a wrong frame range shows
        self.latents = torch.randn(1, num_frames, C, H, W, generator=g) + torch.arange(num_frames).view(
            1, -1, 1, 1, 1
        )
        self.cache_size = 4
        self.asked: list[tuple[int, int]] = []

    def window(self, a: int, b: int) -> torch.Tensor:
        self.asked.append((a, b))
        return self.latents[:, a:b]


def hold_mask() -> torch.Tensor:
    m = torch.zeros(1, 1, 1, H, W)
    m[..., :, : W // 2] = 1.0  # left half held, right half free
    return m


def guided(n: int, follow: float, freedom: float):
    den = ToyDenoiser(n)
    return WarpGuidedDenoiser(den, ToyReference(n), hold_mask(), WarpGuidance(follow, freedom)), den


def test_held_region_is_the_reference_noised_to_each_level_then_runs_free():
    steps, n = 10, 4
    g, _ = guided(n, follow=0.5, freedom=0.8)
    sigmas = g.set_schedule(steps)
    start, end = g.guidance.start_step(steps), g.guidance.hold_end(steps)
    assert (start, end) == (2, 6) and len(sigmas) == steps - start + 1
    unit = torch.randn(1, n, C, H, W, generator=torch.Generator().manual_seed(1))
    x = g.start_latents(unit * g.init_noise_sigma)
    ref = g.ref.latents
    states = [x]
    sample_euler(g, x, sigmas, callback=lambda i, x_, x0: states.append(x_))
    held, free = hold_mask().bool().expand(1, n, C, H, W), ~hold_mask().bool().expand(1, n, C, H, W)
    for k, state in enumerate(states):
        level = float(sigmas[k])
        noised = ref + level * unit
        if start + k <= end:  # the state entering step end is still the noised reference
            assert torch.allclose(state[held], noised[held], atol=1e-4, rtol=1e-5), k
        else:
            assert (state[held] - noised[held]).abs().max() > 1e-3, k  # runs free after the hold
        if k > 0:
            assert (state[free] - noised[free]).abs().max() > 1e-3  # the rest of the frame was free all along
    assert g.held_calls == end - start


def test_follow_zero_is_plain_sdedit_and_full_freedom_is_plain_image_to_video():
    steps, n = 8, 3
    unit = torch.randn(1, n, C, H, W, generator=torch.Generator().manual_seed(2))
    # follow 0: no hold, the sampler starts from the noised reference (SDEdit)
    g, den = guided(n, follow=0.0, freedom=0.5)
    sig = g.set_schedule(steps)
    out = sample_euler(g, g.start_latents(unit * g.init_noise_sigma), sig)
    full = den.set_schedule(steps)
    sdedit = sample_euler(den, g.ref.latents + full[4] * unit, full[4:])
    assert torch.allclose(out, sdedit, atol=1e-5) and g.held_calls == 0
    # freedom 1 and follow 0: the plain image-to-video run, bit for bit
    g, den = guided(n, follow=0.0, freedom=1.0)
    sig = g.set_schedule(steps)
    out = sample_euler(g, g.start_latents(unit * g.init_noise_sigma), sig)
    plain = sample_euler(den, unit * den.init_noise_sigma, den.set_schedule(steps))
    assert torch.equal(out, plain)
    # follow 1: the held region ends exactly on the reference, the free region on the model's own result
    g, den = guided(n, follow=1.0, freedom=0.5)
    sig = g.set_schedule(steps)
    out = sample_euler(g, g.start_latents(unit * g.init_noise_sigma), sig)
    held = hold_mask().bool().expand(1, n, C, H, W)
    assert torch.allclose(out[held], g.ref.latents[held], atol=1e-5)
    assert torch.allclose(out[~held], sdedit[~held], atol=1e-5)


@pytest.mark.parametrize("method", ["phased", "direct", "freenoise", "gen-l-video"])
def test_every_long_method_holds_each_window_to_its_own_part_of_the_reference(method):
    n, clip, steps = 13, 5, 6
    g, den = guided(n, follow=1.0, freedom=0.7)
    sigmas = g.set_schedule(steps)
    noise = g.start_noise(FrameNoise(n, (C, H, W), seed=4))
    assert isinstance(noise, ReferenceStart)
    opts = LongOptions(method=method, omega=0.3 if method == "phased" else 0.2)
    chunks = sample_long(opts, g, noise, sigmas, clip_len=clip, generator=torch.Generator().manual_seed(0),
                         condition_on=lambda last, i: {})  # fmt: skip
    video = torch.zeros(1, n, C, H, W)
    seen = torch.zeros(n, dtype=torch.bool)
    for chunk in chunks:
        video[:, chunk.start : chunk.start + chunk.latents.shape[1]] = chunk.latents
        seen[chunk.start : chunk.start + chunk.latents.shape[1]] = True
    assert seen.all()
    held = hold_mask().bool().expand(1, n, C, H, W)
    # held to the end: every frame's moving region is the reference's own frame (a wrong window or a
    # segment restarted from segment 1's picture would show up here), for phased's omega re-noising too
    assert torch.allclose(video[held], g.ref.latents[held], atol=1e-4)
    assert all(s <= float(sigmas[0]) + 1e-6 for _, _, s in den.calls)  # nothing ran above the start level


def test_phased_later_segments_start_from_their_own_part_of_the_reference():
    n, clip, steps = 12, 5, 10
    g, den = guided(n, follow=0.9, freedom=0.9)
    sigmas = g.set_schedule(steps)
    seen: list[torch.Tensor] = []
    original = g.denoiser

    def spy(x, sigma, frames=None, **cond):
        seen.append((frames.start, float(sigma), x.clone()))
        return original(x, sigma, frames=frames, **cond)

    g.denoiser = spy
    opts = LongOptions(method="phased", omega=0.0, overlap=0)
    list(sample_long(opts, g, g.start_noise(FrameNoise(n, (C, H, W), seed=1)), sigmas, clip_len=clip))
    held = hold_mask()[0, 0, 0].bool()
    ref = g.ref.latents
    # the first call of each later segment (at the branch level): its held region is its own reference
    # frames plus noise that is segment 1's (omega 0), not segment 1's picture
    firsts = {}
    for a, s, x in seen:
        firsts.setdefault(a, (s, x))
    assert sorted(firsts) == [0, 5, 10]
    s1, x1 = firsts[0]
    for a in (5, 10):
        s, x = firsts[a]
        f = x.shape[1]
        residual = (x - ref[:, a : a + f])[..., held]
        assert residual.abs().max() < 3 * s  # noise of its level around its own frames
        wrong = (x - ref[:, :f])[..., held]
        assert (wrong.abs().mean() - residual.abs().mean()) > 0.5 * a  # not around segment 1's frames


def test_start_from_the_top_holds_only_the_moving_region():
    n, steps = 3, 6
    g, _ = guided(n, follow=0.5, freedom=1.0)
    g.set_schedule(steps)
    unit = torch.randn(1, n, C, H, W, generator=torch.Generator().manual_seed(5))
    x = g.start_latents(unit * g.init_noise_sigma)
    held = hold_mask().bool().expand(1, n, C, H, W)
    assert torch.equal(x[~held], (unit * g.init_noise_sigma)[~held])
    assert torch.allclose(x[held], (g.ref.latents + 80.0 * unit)[held], atol=1e-4)
    noise = g.start_noise(TensorNoise(unit))
    assert torch.equal(noise.frames(0, n)[~held], unit[~held])


def test_knobs_modes_and_hold_region():
    assert resolve_control("auto", True) == "trained" and resolve_control("auto", False) == "warp-guided"
    assert resolve_control("none", True) == "none"
    with pytest.raises(UserInputError, match="--control"):
        resolve_control("guided", False)
    with pytest.raises(UserInputError, match="--follow"):
        WarpGuidance(follow=1.5)
    with pytest.raises(UserInputError, match="--freedom"):
        WarpGuidance(freedom=0.0)
    g = WarpGuidance(follow=0.25, freedom=0.6)
    assert g.start_step(25) == 10 and g.hold_end(25) == 14
    assert WarpGuidance(freedom=0.01).start_step(4) == 3  # at least one step runs
    field = np.zeros((8, 8, 2), np.float32)
    field[2:6, 2:6, 0] = 2.0
    field[0, 0, 0] = 0.1  # too slow to hold
    mask = np.ones((8, 8), bool)
    mask[:, 5:] = False
    region = hold_region(field, mask)
    assert region.sum() == 12 and region[2:6, 2:5].all() and not region[0, 0]


def test_reference_rendered_at_twice_the_size_moves_as_asked_and_keeps_still_pixels():
    """The reference is warped at twice the working size and area-averaged back: still pixels are the
    photo's exactly, and content moves along the field as the working-size warp moves it."""
    import cv2

    from stillmotion.diffusion.warp_condition import WarpedCondition

    rng = np.random.default_rng(3)
    h, w = 40, 56
    image = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (0, 0), 1.5)
    field = np.zeros((h, w, 2), np.float32)
    field[..., 0] = 1.0  # 1 px/frame to the right
    mask = np.zeros((h, w), bool)
    mask[8:32, 8:48] = True

    def frames(supersample: int) -> np.ndarray:
        source = WarpedCondition(image, field, 6, mask, lambda px: px, noise_aug_strength=0.0, seed=0,
                                 supersample=supersample)  # fmt: skip
        return source.frames(0, 6).astype(np.float32)

    plain, fine = frames(1), frames(2)
    assert np.array_equal(fine[:, ~mask], np.broadcast_to(image[~mask], fine[:, ~mask].shape))
    inner = (slice(None), slice(12, 28), slice(16, 44))  # away from the mask's edge and the smear behind it
    assert np.abs(fine[inner] - plain[inner]).mean() < 3.0  # the same motion (a resampling's difference)
    shifted = np.abs(fine[5][12:28, 21:44] - image[12:28, 16:39].astype(np.float32)).mean()
    assert shifted < 3.0 < np.abs(fine[5][12:28, 21:44] - image[12:28, 21:44].astype(np.float32)).mean()
