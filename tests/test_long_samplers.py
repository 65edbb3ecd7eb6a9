"""Long-video samplers against a small deterministic toy denoiser (fast; no UNet)."""

from __future__ import annotations

import pytest
import torch

from stillmotion.errors import UserInputError
from stillmotion.sampling import (
    LONG_METHODS,
    FrameNoise,
    LongOptions,
    TensorNoise,
    expected_cost,
    freenoise_noise,
    sample_long,
)
from stillmotion.sampling.gen_l_video import average_windows
from stillmotion.sampling.own_motion import Transport
from stillmotion.sampling.segments import phased_segments, reuse_steps, sliding_windows

CLIP = 25
STEPS = 6
LATENT = (4, 3, 3)  # C, h, w: tiny so 125 frames take milliseconds


class ToyDenoiser:
    """x0 = blend of a temporally mixed x and the conditioning image, by noise level; counts its work.

    The 3-tap temporal mixing makes the result depend on which frames share a call, so windowing and
    segment joins are visible; the frame index and the ``image`` override enter too, so wrong plumbing
    shows.
    """

    def __init__(self) -> None:
        self.image = torch.linspace(-1, 1, LATENT[0] * LATENT[1] * LATENT[2]).reshape(1, *LATENT)
        self.calls = 0
        self.frame_passes = 0
        self.seen_images: list[torch.Tensor | None] = []

    def __call__(self, x, sigma, frames=None, image=None):
        self.calls += 1
        self.frame_passes += x.shape[1]
        self.seen_images.append(image)
        padded = torch.cat([x[:, :1], x, x[:, -1:]], dim=1)
        mixed = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
        index = torch.arange(frames.start, frames.stop, dtype=x.dtype)[None, :, None, None, None]
        img = (self.image if image is None else image)[:, None]
        c = 1.0 / (sigma**2 + 1.0)
        return c * mixed + (1 - c) * (img + 0.01 * torch.sin(index))


def karras(steps: int = STEPS, smin: float = 0.002, smax: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, steps)
    s = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return torch.cat([s, torch.zeros(1)])


def run(method: str, n: int, seed: int = 0, steps: int = STEPS, **opts):
    den = ToyDenoiser()
    options = LongOptions(method=method, **opts)
    noise = FrameNoise(n, LATENT, seed=seed)
    chunks = list(
        sample_long(
            options,
            den,
            noise,
            karras(steps),
            clip_len=CLIP,
            generator=torch.Generator().manual_seed(seed),
            condition_on=lambda last, index: {"image": last * 0.5},
        )
    )
    return chunks, den, options


@pytest.mark.parametrize("method", LONG_METHODS)
@pytest.mark.parametrize("n", [1, 24, 25, 26, 125])
def test_exactly_n_frames_in_order(method, n):
    chunks, den, options = run(method, n)
    start = 0
    for chunk in chunks:
        assert chunk.start == start
        assert chunk.latents.shape[0] == 1 and chunk.latents.shape[2:] == LATENT
        assert torch.isfinite(chunk.latents).all()
        start += chunk.latents.shape[1]
    assert start == n
    # the work done is what the docstring formulas say
    cost = expected_cost(options, n, CLIP, STEPS)
    assert (den.calls, den.frame_passes) == (cost.denoiser_calls, cost.frame_passes)


@pytest.mark.parametrize("method", LONG_METHODS)
def test_same_seed_same_video(method):
    a = torch.cat([c.latents for c in run(method, 60, seed=3)[0]], dim=1)
    b = torch.cat([c.latents for c in run(method, 60, seed=3)[0]], dim=1)
    c = torch.cat([c.latents for c in run(method, 60, seed=4)[0]], dim=1)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_nfe_formulas_written_out():
    # 125 frames, L = 25, T = 25, gamma 0.8 (M = 20), overlap 1: segments of 25,25,25,25,25,5 frames
    assert phased_segments(125, 25, 1) == [(0, 25), (24, 49), (48, 73), (72, 97), (96, 121), (120, 125)]
    assert reuse_steps(25, 0.8) == 20 and reuse_steps(25, 1.0) == 25 and reuse_steps(25, 0.0) == 0
    cost = {m: expected_cost(LongOptions(method=m, overlap=1), 125, 25, 25) for m in LONG_METHODS}
    assert cost["phased"].frame_passes == 25 * 25 + (4 * 25 + 5) * 5 == 1150
    assert cost["phased"].denoiser_calls == 25 + 5 * 5
    # overlap 0: the paper's cut, K = 5 segments of 25
    assert expected_cost(LongOptions(overlap=0), 125, 25, 25).frame_passes == 25 * 25 + 4 * 25 * 5 == 1125
    # direct: the paper's K = 5 clips of 25 frames, every clip fully denoised
    assert cost["direct"].frame_passes == 125 * 25 and cost["direct"].denoiser_calls == 5 * 25
    assert cost["freenoise"].frame_passes == 125 * 25 and cost["freenoise"].denoiser_calls == 25
    # gen-l-video: windows every 6 frames (L // 4), last aligned to the end: 0, 6, ..., 96, 100 -> 18
    assert LongOptions(method="gen-l-video").window_stride(25) == 6
    windows = sliding_windows(125, 25, 6)
    assert windows[-2:] == [(96, 121), (100, 125)] and len(windows) == 18
    assert cost["gen-l-video"].frame_passes == 25 * 18 * 25 and cost["gen-l-video"].denoiser_calls == 18 * 25
    # the stride stays in Gen-L-Video's 4..8 and below L // 2
    strides = [LongOptions(method="gen-l-video").window_stride(n) for n in (4, 14, 16, 40, 64)]
    assert strides == [2, 4, 4, 8, 8]


def test_gamma_one_later_segments_cost_nothing():
    chunks, den, _ = run("phased", 125, gamma=1.0, overlap=1, carry="copy")
    assert den.calls == STEPS and den.frame_passes == CLIP * STEPS
    # the paper's copy: later segments are segment 1's frames (after the anchor), a replication
    first = chunks[0].latents
    assert torch.equal(chunks[1].latents, first[:, 1:])


def test_phased_overlap_cross_fades_into_the_new_segment():
    # gamma 1: no step is redone, so the overlap is exactly the linear dissolve the docstring describes
    o = 4
    chunks, den, _ = run("phased", 60, gamma=1.0, overlap=o, carry="copy")
    assert den.calls == STEPS
    first = chunks[0].latents  # frames 0 .. 21: segment 1 less the o - 1 frames the next one blends
    assert chunks[0].start == 0 and first.shape[1] == CLIP - (o - 1)
    assert chunks[1].start == CLIP - o + 1  # frame a = 21 is the previous segment's, already written
    video = torch.cat([c.latents for c in chunks], 1)
    assert video.shape[1] == 60
    # segment 1's full result (written frames plus the held-back ones): the toy denoiser is deterministic
    full = run("phased", CLIP, gamma=1.0, overlap=o, carry="copy")[0][0].latents
    assert torch.equal(full[:, : CLIP - o + 1], first)
    a = CLIP - o
    for j in range(1, o):
        w = 1 - j / o
        expected = w * full[:, a + j] + (1 - w) * full[:, j]  # previous end dissolving into the copy
        assert torch.allclose(video[:, a + j], expected, atol=1e-6)
    assert torch.equal(video[:, a + o], full[:, o])  # past the overlap: the segment's own frame


def test_phased_redoes_only_the_last_steps():
    steps = 10
    chunks, den, _ = run("phased", 60, steps=steps, gamma=0.7, overlap=1)  # M = 7, 3 segments
    assert den.calls == steps + 2 * 3
    assert [c.join for c in chunks] == [0, 1, 1]
    assert [c.start for c in chunks] == [0, 25, 49]


def test_phased_omega_and_shuffle_make_segments_differ():
    # without reschedule randomness and with the same noise order the later segments would copy segment 1
    chunks, _, _ = run("phased", 75, omega=0.2, overlap=0)
    first, second, third = (c.latents for c in chunks)
    assert not torch.allclose(second, first, atol=1e-4)
    assert not torch.allclose(third, second, atol=1e-4)


def test_phased_anchor_continues_previous_segment():
    # the anchor frame is held at the previous segment's last latent, so the new segment starts from it:
    # its first new frame is closer to the previous end than without anchors
    def seam(overlap: int) -> float:
        chunks, _, _ = run("phased", 50, gamma=0.5, overlap=overlap)
        return float((chunks[1].latents[:, 0] - chunks[0].latents[:, -1]).abs().mean())

    assert seam(1) < seam(0)


def test_direct_conditions_on_last_frame():
    chunks, den, _ = run("direct", 60)
    # clips [0,25) [25,50) [50,60), concatenated; each later one is a join of one step
    assert [c.start for c in chunks] == [0, 25, 50] and [c.latents.shape[1] for c in chunks] == [25, 25, 10]
    assert [c.join for c in chunks] == [0, 1, 1]
    assert den.frame_passes == 60 * STEPS
    # first clip: the denoiser's own image; later clips: condition_on(previous last latent)
    assert all(img is None for img in den.seen_images[:STEPS])
    expected = chunks[0].latents[:, -1] * 0.5
    assert torch.equal(den.seen_images[STEPS], expected)
    assert torch.equal(den.seen_images[2 * STEPS], chunks[1].latents[:, -1] * 0.5)


def test_gen_l_video_averages_overlaps():
    def window_id(x, sigma, frames=None):
        return torch.full_like(x, float(frames.start))

    x = torch.zeros(1, 30, 1, 1, 1)
    windows = [(0, 10), (5, 15), (10, 20), (15, 25), (20, 30)]
    x0 = average_windows(window_id, x, torch.tensor(1.0), windows).flatten()
    assert torch.equal(x0[:5], torch.zeros(5))  # only window 0
    assert torch.equal(x0[5:10], torch.full((5,), 2.5))  # windows starting at 0 and 5
    assert torch.equal(x0[12:15], torch.full((3,), 7.5))  # 5 and 10
    assert torch.equal(x0[25:], torch.full((5,), 20.0))


def test_gen_l_video_one_step_per_level_on_combined_estimate():
    # with a single window covering everything it is plain Euler over the whole clip
    chunks, den, _ = run("gen-l-video", 20)
    whole, direct_den = run("direct", 20)[:2]
    assert torch.equal(chunks[0].latents, whole[0].latents)
    assert den.calls == direct_den.calls == STEPS


def test_freenoise_noise_blocks_are_shuffled_copies():
    noise = FrameNoise(40, (1, 2, 2), seed=1)
    out = freenoise_noise(noise, 16, 4, torch.Generator().manual_seed(0))
    assert out.shape == (1, 40, 1, 2, 2)
    assert torch.equal(out[:, :16], noise.frames(0, 16))
    for i in range(16, 40, 4):
        block, earlier = out[0, i : i + 4].flatten(1), out[0, i - 16 : i - 12].flatten(1)
        assert sorted(map(tuple, block.tolist())) == sorted(map(tuple, earlier.tolist()))
    # any 16 consecutive frames hold the same set of noises
    first = sorted(map(tuple, out[0, :16].flatten(1).tolist()))
    assert sorted(map(tuple, out[0, 24:40].flatten(1).tolist())) == first


def test_frame_noise_is_random_access():
    noise = FrameNoise(100, (2, 3, 3), seed=7)
    whole = noise.frames(0, 100)
    assert torch.equal(noise.frames(40, 60), whole[:, 40:60])
    assert torch.equal(TensorNoise(whole).frames(3, 9), whole[:, 3:9])
    assert abs(float(whole.std()) - 1) < 0.1


def test_bad_options_are_user_errors():
    with pytest.raises(UserInputError, match="long-method"):
        LongOptions(method="loop")
    with pytest.raises(UserInputError, match="gamma"):
        LongOptions(gamma=1.5)
    with pytest.raises(UserInputError, match="frames"):
        run("phased", 0)


class ResidualToy(ToyDenoiser):
    """The toy with the ``reference`` hook of a condition-residual model: r grows with the frame index."""

    def reference(self, start, stop):
        index = torch.arange(start, stop, dtype=torch.float32).view(1, -1, 1, 1, 1)
        return index.expand(1, -1, *LATENT) * 0.1


def test_phased_carries_segment_one_relative_to_each_segments_reference():
    # gamma 1: nothing is redone, so segment k is exactly r_k + (segment 1 - r_1) past its anchor
    den = ResidualToy()
    options = LongOptions(method="phased", gamma=1.0, overlap=1)
    chunks = list(sample_long(options, den, FrameNoise(60, LATENT, seed=0), karras(), clip_len=CLIP,
                              generator=torch.Generator().manual_seed(0)))
    first = chunks[0].latents
    a = CLIP - 1  # the second segment covers frames 24 .. 48
    moved = first + den.reference(a, a + CLIP) - den.reference(0, CLIP)
    assert torch.allclose(chunks[1].latents, moved[:, 1:], atol=1e-6)
    # without the hook the later segment would be a copy of segment 1 (test_gamma_one_... above)
    assert not torch.allclose(chunks[1].latents, first[:, 1:], atol=1e-3)


def own_expected(full: torch.Tensor, base: torch.Tensor, length: int, ahead: int = 0) -> torch.Tensor:
    """The own carry's start at sigma 0: segment 1's frame t = j + ahead, offset by (1 - t / (L - 1)) *
    K_t(base - segment 1's frame 0), K_t segment 1's own transport from its frame 0 to its frame t."""
    t = (torch.arange(full.shape[1]) + ahead).clamp(max=full.shape[1] - 1)  # every position of a segment
    fade = (1 - t / (full.shape[1] - 1)).view(1, -1, 1, 1, 1)
    moved = Transport.fit(full[:, 0], full[:, t]).apply(base - full[:, :1])  # fitted on the whole clip
    return (full[:, t] + fade * moved)[:, :length]


class JitteryToy(ResidualToy):
    """A model that follows its reference but with a jitter of its own: every clip it makes steps back at
    its 12th frame (-0.25 against the reference's +0.1 a frame)."""

    def __call__(self, x, sigma, frames=None, image=None):
        self.calls += 1
        index = torch.arange(frames.start, frames.stop, dtype=x.dtype).view(1, -1, 1, 1, 1)
        jitter = torch.zeros(1, x.shape[1], 1, 1, 1)
        jitter[:, 12] = -0.25
        wobble = 0.01 * torch.sin(index) * self.image[:, None]  # frames that differ beyond the motion
        return self.reference(frames.start, frames.stop) + wobble + jitter


def frame_steps(chunks) -> torch.Tensor:
    video = torch.cat([c.latents for c in chunks], dim=1)
    return (video[:, 1:] - video[:, :-1]).mean(dim=(0, 2, 3, 4))  # step t -> t + 1


@pytest.mark.parametrize("overlap", [0, 1, 3])
def test_phased_appearance_carry_does_not_replay_segment_ones_jitter(overlap):
    # gamma 1: nothing is redone, so each later segment is exactly its carry's start past its anchor
    den = JitteryToy()
    noise = FrameNoise(90, LATENT, seed=0)

    def video(carry):
        return list(sample_long(LongOptions(method="phased", gamma=1.0, overlap=overlap, carry=carry), den,
                                noise, karras(), clip_len=CLIP, generator=torch.Generator().manual_seed(0)))

    reference, appearance = video("reference"), video("appearance")
    assert torch.equal(reference[0].latents, appearance[0].latents)  # segment 1 is the model's own clip
    # segment 1 in full (a cross-fade holds its last overlap - 1 frames back): the clip of that seed
    one = sample_long(LongOptions(), den, FrameNoise(CLIP, LATENT, seed=0), karras(), clip_len=CLIP)
    first = torch.cat([c.latents for c in one], dim=1)
    # the reference carry puts segment 1's jitter on every later segment: a step back at each of them
    back = (frame_steps(reference) < 0).nonzero().flatten().tolist()
    assert len(back) == 4 and back[0] == 11  # segment 1's own (frame 11 -> 12) and 3 replays
    # appearance: segment 1's mean deviation from its reference, reached from where the previous
    # segment ended: the later segments step with the reference and back nowhere
    steps = frame_steps(appearance)
    assert (steps < 0).nonzero().flatten().tolist() == [11]
    assert float(steps[CLIP:].min()) > 0.05
    a, b = phased_segments(90, CLIP, overlap)[1]
    d = (first - den.reference(0, CLIP)).mean(dim=1, keepdim=True)
    end = first[:, CLIP - max(overlap, 1) : CLIP - max(overlap, 1) + 1]  # the previous end, frame a or a - 1
    at = den.reference(a - (0 if overlap else 1), a - (0 if overlap else 1) + 1)
    t = (torch.arange(b - a) + (0 if overlap else 1)).clamp(max=CLIP - 1)
    fade = (1 - t / (CLIP - 1)).view(1, -1, 1, 1, 1)
    # the deviation moved as the reference moves inside the segment (this toy's reference only brightens:
    # the transport is the identity there, within 1e-3)
    moved = Transport.fit(at[:, 0], den.reference(a, b))
    start = den.reference(a, b) + fade * moved.apply(end - at) + (1 - fade) * moved.apply(d)
    assert torch.allclose(start, den.reference(a, b) + d + fade * (end - at - d), atol=1e-3)
    if overlap:  # the overlap dissolves from the previous segment into the new one
        w = torch.tensor([1 - j / overlap for j in range(overlap)]).view(1, -1, 1, 1, 1)
        start[:, :overlap] = w * first[:, CLIP - overlap :] + (1 - w) * start[:, :overlap]
    got = appearance[1].latents
    assert torch.allclose(got, start[:, min(overlap, 1) : min(overlap, 1) + got.shape[1]], atol=1e-5)


def test_phased_own_carry_goes_on_from_the_previous_end():
    # gamma 1: nothing is redone, so segment k is exactly the own carry's start past its anchor: it starts
    # where the previous segment ended and makes segment 1's changes less their share of the offset
    for carry in ("own", "motion"):  # the toy has no reference and gets no motion: motion means own
        chunks, den, _ = run("phased", 60, gamma=1.0, overlap=1, carry=carry)
        assert den.calls == STEPS
        first, second, third = (c.latents for c in chunks)  # [0, 25), [25, 49) and [49, 60)
        assert torch.allclose(second, own_expected(first, first[:, -1:], CLIP)[:, 1:], atol=1e-6)
        expected = own_expected(first, second[:, -1:], third.shape[1] + 1)[:, 1:]
        assert torch.allclose(third, expected, atol=1e-6)
    # its first new frame is about one of segment 1's steps away from the previous end; the copy's restarts
    copied = run("phased", 60, gamma=1.0, overlap=1, carry="copy")[0]
    step = (first[:, 1] - first[:, 0]).abs().mean()
    assert (second[:, 0] - first[:, -1]).abs().mean() < 1.5 * step
    assert (copied[1].latents[:, 0] - first[:, -1]).abs().mean() > 2 * step


def test_phased_own_carry_accumulates_no_drift():
    # a denoiser whose clips drift (x0 grows with the frame's place in the window): replaying segment 1's
    # changes from each previous end alone would add the whole drift again at every segment
    class Drifting(ToyDenoiser):
        def __call__(self, x, sigma, frames=None, image=None):
            x0 = super().__call__(x, sigma, frames=frames, image=image)
            return x0 + 0.1 * torch.arange(x.shape[1], dtype=x.dtype).view(1, -1, 1, 1, 1)

    chunks = list(sample_long(LongOptions(method="phased", gamma=0.5, overlap=1, carry="own"), Drifting(),
                              FrameNoise(125, LATENT, seed=0), karras(), clip_len=CLIP,
                              generator=torch.Generator().manual_seed(0)))  # fmt: skip
    drift = float((chunks[0].latents[:, -1] - chunks[0].latents[:, 0]).mean())
    assert drift > 2  # 24 frames at 0.1
    ends = [float(c.latents[:, -1].mean()) for c in chunks[:-1]]
    # every segment ends near where segment 1 ended, not 4 more drifts on
    assert max(ends) - min(ends) < 0.1 * drift


def test_phased_own_carry_with_a_cut_takes_the_frames_one_on():
    chunks, _, _ = run("phased", 50, gamma=1.0, overlap=0, carry="own")
    first, second = chunks[0].latents, chunks[1].latents  # segments [0, 25) and [25, 50)
    # position j is one frame after the previous segment's last: segment 1's frame j + 1 (the last held)
    assert torch.allclose(second, own_expected(first, first[:, -1:], CLIP, ahead=1), atol=1e-6)


def test_phased_motion_carry_follows_the_reference_only_for_a_model_that_follows_it():
    den = ResidualToy()
    noise = FrameNoise(60, LATENT, seed=0)

    def second(carry, follows_reference=None):
        chunks = list(sample_long(LongOptions(method="phased", gamma=1.0, overlap=1, carry=carry), den, noise,
                                  karras(), clip_len=CLIP, generator=torch.Generator().manual_seed(0),
                                  follows_reference=follows_reference))  # fmt: skip
        return chunks[1].latents

    reference = second(carry="reference")
    own = second(carry="own")
    assert not torch.allclose(reference, own, atol=1e-3)
    assert torch.equal(second(carry="motion"), reference)  # unknown: a reference exists, so it is used
    assert torch.equal(second(carry="motion", follows_reference=True), reference)
    assert torch.equal(second(carry="motion", follows_reference=False), own)
    # the literal reference carry without a reference is the paper's copy
    plain = list(sample_long(LongOptions(method="phased", gamma=1.0, overlap=1, carry="reference"),
                             ToyDenoiser(), noise, karras(), clip_len=CLIP))
    assert torch.equal(plain[1].latents, plain[0].latents[:, 1:])


def test_phased_carry_copy_is_the_papers_plain_copy_even_with_a_reference():
    den = ResidualToy()
    options = LongOptions(method="phased", gamma=1.0, overlap=1, carry="copy")
    chunks = list(sample_long(options, den, FrameNoise(60, LATENT, seed=0), karras(), clip_len=CLIP,
                              generator=torch.Generator().manual_seed(0)))
    assert torch.equal(chunks[1].latents, chunks[0].latents[:, 1:])


class Recorder(ToyDenoiser):
    """The toy that keeps every call's input x and window."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[tuple[torch.Tensor, float, int]] = []

    def __call__(self, x, sigma, frames=None, image=None):
        self.inputs.append((x.clone(), float(sigma), frames.start))
        return super().__call__(x, sigma, frames=frames, image=image)


def phased_starts(omega: float, shuffle: bool, n: int = 100, steps: int = 10, m: int = 6):
    """(segment 1's x at the branch step and its x0 there, each later segment's first input x)."""
    from stillmotion.sampling.phased import sample_phased

    den = Recorder()
    list(sample_phased(den, FrameNoise(n, LATENT, seed=2), karras(steps), segment_len=CLIP, branch=m,
                       omega=omega, overlap=0, carry="copy", shuffle=shuffle,
                       generator=torch.Generator().manual_seed(5)))  # fmt: skip
    x_m = den.inputs[m][0]
    x0_m = ToyDenoiser()(x_m, karras(steps)[m], frames=slice(0, CLIP))
    later = [x for x, _, start in den.inputs[steps:] if start > 0]
    starts = later[:: steps - m]  # the first call of each later segment
    assert len(starts) == len(phased_segments(n, CLIP, 0)) - 1
    return x_m, x0_m, starts, float(karras(steps)[m])


def test_phased_omega_zero_without_shuffle_reproduces_x_m():
    x_m, _, starts, _ = phased_starts(omega=0.0, shuffle=False)
    for x in starts:
        assert torch.allclose(x, x_m, atol=1e-5)


def test_phased_omega_alone_adds_scaled_fresh_noise():
    x_m, _, starts, sigma_m = phased_starts(omega=0.2, shuffle=False)
    for x in starts:
        extra = (x - x_m) / (sigma_m * 0.2)  # eps_k, standard normal, different per segment
        assert 0.8 < float(extra.std()) < 1.2
    assert not torch.allclose(starts[0], starts[1], atol=1e-3)


def test_phased_shuffle_alone_permutes_segment_ones_noise():
    x_m, x0_m, starts, sigma_m = phased_starts(omega=0.0, shuffle=True)
    n = (x_m - x0_m) / sigma_m
    frames_of_n = [n[:, j] for j in range(CLIP)]
    moved = 0
    for x in starts:
        n_tilde = (x - x0_m) / sigma_m
        for j in range(CLIP):
            match = [i for i, f in enumerate(frames_of_n) if torch.allclose(n_tilde[:, j], f, atol=1e-4)]
            assert len(match) == 1  # every frame's noise is one of segment 1's
            moved += match[0] != j
    assert moved > 0


def test_eq12_shuffles_across_segments():
    from stillmotion.sampling.phased import _ShuffledNoise

    shared = torch.randn(1, 5, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    noise = _ShuffledNoise(shared, 0.3, 3, torch.Generator().manual_seed(1))
    seqs = [noise.segment(k, 5) for k in (1, 2, 3)]
    # entry e stands for n[e % L] + omega * eps(e); the three segments take all 15 entries once
    entries = noise.perm.tolist()
    assert sorted(entries) == list(range(15))
    for k, seq in enumerate(seqs):
        for j in range(5):
            e = entries[k * 5 + j]
            assert torch.allclose(seq[:, j], shared[:, e % 5] + 0.3 * noise.eps.frame(e), atol=1e-6)
    # the shuffle crosses segments: some segment holds entries of another's sequence
    assert any(entries[i] // 5 != i // 5 for i in range(15))


def test_gen_l_video_several_windows_combine_then_step():
    # 60 frames, windows of 25 every 6: frames covered by up to 5 windows; the result is exactly an Euler
    # step per level on the per-frame mean of the windows' estimates (written out independently here)
    from stillmotion.sampling.base import euler_step

    n, stride = 60, 6
    chunks, den, _ = run("gen-l-video", n, stride=stride)
    windows = sliding_windows(n, CLIP, stride)
    assert len(windows) == 7 and den.calls == 7 * STEPS
    video = torch.cat([c.latents for c in chunks], 1)
    sig = karras()
    ref_den = ToyDenoiser()
    x = FrameNoise(n, LATENT, seed=0).frames(0, n) * sig[0]
    for i in range(STEPS):
        estimates = [[] for _ in range(n)]
        for a, b in windows:
            out = ref_den(x[:, a:b], sig[i], frames=slice(a, b))
            for f in range(a, b):
                estimates[f].append(out[:, f - a])
        x0 = torch.stack([torch.stack(e).mean(0) for e in estimates], dim=1)
        x = euler_step(x, x0, sig[i], sig[i + 1])
    assert torch.allclose(video, x, atol=1e-5)
    # windows interact: one window at a time over the same frames gives another video
    single = run("gen-l-video", n, stride=CLIP)[0]
    assert not torch.allclose(torch.cat([c.latents for c in single], 1), video, atol=1e-4)


def test_branch_by_noise_level():
    from stillmotion.sampling.segments import branch_step

    sig = karras(10)
    m = branch_step(sig, 10, 0.8, 1.0)
    assert sig[m] <= 1.0 < sig[m - 1]
    assert branch_step(sig, 10, 0.8, None) == 8
    assert branch_step(sig, 10, 0.8, 1e-9) == 10  # never that low: nothing is redone
    opts = LongOptions(branch_sigma=1.0)
    cost = expected_cost(opts, 75, CLIP, 10, sig)
    den = ToyDenoiser()
    list(sample_long(opts, den, FrameNoise(75, LATENT, seed=0), sig, clip_len=CLIP))
    assert (den.calls, den.frame_passes) == (cost.denoiser_calls, cost.frame_passes) == (
        10 + 3 * (10 - m), 25 * 10 + (25 + 25 + 3) * (10 - m))
    with pytest.raises(UserInputError, match="branch-sigma"):
        LongOptions(branch_sigma=0)


def test_freenoise_noise_does_not_depend_on_the_length():
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    long = freenoise_noise(FrameNoise(61, (1, 2, 2), seed=1), 16, 4, gen())
    short = freenoise_noise(FrameNoise(47, (1, 2, 2), seed=1), 16, 4, gen())
    assert torch.equal(long[:, :47], short)


@pytest.mark.parametrize("method", ["phased", "direct"])
def test_first_clip_of_a_long_video_is_the_short_video(method):
    # same seed, same noise per frame: the first clip, sampled on its own, does not depend on the length
    # (the window methods sample jointly; their noise is shared: FrameNoise, freenoise_noise above)
    short = torch.cat([c.latents for c in run(method, CLIP)[0]], 1)
    longer = torch.cat([c.latents for c in run(method, CLIP + 30, overlap=1)[0]], 1)
    assert torch.equal(longer[:, :CLIP], short)


def smooth_texture(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    k = torch.ones(1, 1, 3, 3) / 9
    flat = x.reshape(-1, 1, *shape[-2:])
    padded = torch.nn.functional.pad(flat, (1, 1, 1, 1), mode="circular")
    return torch.nn.functional.conv2d(padded, k).view(shape)


def shifted(x: torch.Tensor, s: float) -> torch.Tensor:
    """``x`` moved ``s`` pixels right (0 <= s, linear interpolation, wrapping round)."""
    whole, part = int(s), s - int(s)
    x = torch.roll(x, whole, dims=-1)
    return (1 - part) * x + part * torch.roll(x, 1, dims=-1)


def test_transport_moves_another_picture_as_segment_one_moved_its_own():
    a, b = smooth_texture((2, 4, 24, 24), 0), smooth_texture((2, 4, 24, 24), 1)
    frames = torch.stack([shifted(a, 0.2 * j) for j in range(5)], dim=1)
    moved = Transport.fit(a, frames).apply(b[:, None])
    for j in range(1, 5):
        truth = shifted(b, 0.2 * j)
        err, held = (moved[:, j] - truth).pow(2).mean().sqrt(), (b - truth).pow(2).mean().sqrt()
        assert err < 0.45 * held  # moved, not held in place
    assert moved.shape == (2, 5, 4, 24, 24)


class ShiftingToy(ToyDenoiser):
    """A model whose clips move a texture 0.2 latent pixels a frame to the right (its own motion)."""

    def __init__(self) -> None:
        super().__init__()
        self.texture = smooth_texture((1, 2, 16, 16), 3)

    def __call__(self, x, sigma, frames=None, image=None):
        self.calls += 1
        return torch.stack([shifted(self.texture, 0.2 * (j - frames.start)) for j in range(frames.start,
                            frames.stop)], dim=1)  # fmt: skip


def test_phased_own_carry_moves_the_previous_end_on_as_segment_one_moved():
    # gamma 1: segment 2 is its carry's start. The previous end is the texture 4.8 px on; continuing the
    # motion moves it on 0.2 px a frame. An offset added in place would hold it still.
    den = ShiftingToy()
    chunks = list(sample_long(LongOptions(method="phased", gamma=1.0, overlap=1, carry="own"), den,
                              FrameNoise(40, (2, 16, 16), seed=0), karras(), clip_len=CLIP,
                              generator=torch.Generator().manual_seed(0)))  # fmt: skip
    first, second = chunks[0].latents, chunks[1].latents
    end = first[:, -1:]
    fade = (1 - torch.arange(1, 5) / (CLIP - 1)).view(1, -1, 1, 1, 1)
    held = first[:, 1:5] + fade * (end - first[:, :1])  # the offset added in place
    truth = torch.stack([shifted(end[:, 0], 0.2 * j) for j in range(1, 5)], dim=1)
    err = (second[:, :4] - truth).pow(2).mean(dim=(0, 2, 3, 4)).sqrt()
    err_held = (held - truth).pow(2).mean(dim=(0, 2, 3, 4)).sqrt()
    assert bool((err < 0.5 * err_held).all()), (err, err_held)
