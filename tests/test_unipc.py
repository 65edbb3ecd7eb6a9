"""The UniPC sampler (sampling.unipc) on toy denoisers: its steps equal diffusers' UniPCMultistepScheduler
(flow prediction, data-prediction form) for the settings Wan ships and others; it is more accurate than Euler
where the exact ODE solution is known (Gaussian data, flow matching and SVD's EDM form); a trajectory is
consecutive steps from any start; and every long-video method runs on it with the history the docs say
(direct: per clip, FreeNoise and Gen-L-Video: the whole video, phased: segment 1, then restarted at the
branch for every later segment), exact frame counts, the cost formulas' calls and exact anchors."""

from __future__ import annotations

import pytest
import torch

from stillmotion.sampling import FrameNoise, LongOptions, expected_cost, sample_long, sample_phased
from stillmotion.sampling.base import euler_step, sample_euler, sample_ode
from stillmotion.sampling.parameterization import FlowMatching, VPredictionEDM
from stillmotion.sampling.unipc import UniPC

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FM = FlowMatching()
W = torch.randn(6, 6, generator=torch.Generator().manual_seed(0)) * 0.4


def _velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # a smooth nonlinear stand-in for a flow model's v prediction
    return torch.tanh(x @ W) * (1 + t) + 0.5 * x


@pytest.mark.parametrize(
    ("order", "variant", "lower_order_final", "final", "steps", "disable"),
    [
        (2, "bh2", True, "zero", 3, ()),  # Wan's settings
        (2, "bh2", True, "zero", 8, ()),
        (2, "bh2", True, "zero", 8, (2, 5)),  # some states left uncorrected
        (3, "bh2", True, "zero", 10, ()),
        (1, "bh2", True, "zero", 5, ()),
        (2, "bh1", False, "sigma_min", 5, ()),  # bh1 needs a last level above 0 in diffusers (0 * inf)
    ],
)
def test_steps_equal_diffusers_unipc_scheduler(order, variant, lower_order_final, final, steps, disable):
    from diffusers import UniPCMultistepScheduler

    sched = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, solver_order=order,
        solver_type=variant, lower_order_final=lower_order_final, predict_x0=True, final_sigmas_type=final,
        disable_corrector=list(disable),
    )  # fmt: skip
    sched.set_timesteps(steps)
    sigmas = sched.sigmas
    start = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    theirs = start.clone()
    for i, t in enumerate(sched.timesteps):
        theirs = sched.step(_velocity(theirs, sigmas[i]), t, theirs).prev_sample
    solver = UniPC(order, variant, lower_order_final, disable_corrector=disable)
    path = solver.start(sigmas, FM)
    ours = start.clone()
    for i in range(steps):
        ours = path.step(i, ours, FM.denoised(ours, _velocity(ours, sigmas[i]), sigmas[i]))
    assert torch.isfinite(theirs).all()
    assert (ours - theirs).abs().max() <= 1e-5
    if order > 1:  # not trivially Euler
        euler = start.clone()
        for i in range(steps):
            euler = euler_step(euler, FM.denoised(euler, _velocity(euler, sigmas[i]), sigmas[i]), sigmas[i],
                               sigmas[i + 1])  # fmt: skip
        assert (euler - theirs).abs().max() > 1e-3


MU, SD = 0.7, 0.3  # Gaussian data: the exact x0 estimate and the exact ODE solution are known


class _Gaussian:
    """The exact denoiser of N(MU, SD^2) data in a parameterisation."""

    def __init__(self, parameterization, solver=None) -> None:
        self.parameterization = parameterization
        self.solver = solver

    def __call__(self, x, sigma, **_):
        alpha, s = (float(v) for v in self.parameterization.signal_noise_scales(torch.as_tensor(sigma)))
        # x = alpha x0 + s n: E[x0 | x] = MU + alpha SD^2 / (alpha^2 SD^2 + s^2) (x - alpha MU)
        return MU + alpha * SD**2 / (alpha**2 * SD**2 + s**2) * (x - alpha * MU)


@pytest.mark.parametrize("kind", ["flow", "edm"])
def test_more_accurate_than_euler_on_the_exact_ode(kind):
    n = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = MU + SD * n  # the probability-flow ODE maps unit noise z to MU + SD z
    if kind == "flow":
        param = FlowMatching()
        sigmas = torch.linspace(1, 0, 21, dtype=torch.float64) ** 2  # from t = 1 exactly (lambda = -inf)
        start = n.clone()
    else:
        param = VPredictionEDM()
        ramp = torch.linspace(0, 1, 6, dtype=torch.float64)
        sigmas = (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
        sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
        start = MU + (SD**2 + sigmas[0] ** 2).sqrt() * n  # the exact state at the first level
    euler = (sample_euler(_Gaussian(param), start, sigmas) - exact).abs().max()
    unipc = (sample_ode(_Gaussian(param, UniPC()), start, sigmas) - exact).abs().max()
    assert torch.isfinite(unipc)
    assert unipc < euler / 4, (float(unipc), float(euler))
    # order 1 without the corrector is DDIM: the Euler step, in either parameterisation
    ddim = sample_ode(_Gaussian(param, UniPC(order=1, corrector=False)), start, sigmas)
    assert torch.allclose(ddim, sample_euler(_Gaussian(param), start, sigmas), atol=1e-12)


def test_a_trajectory_is_consecutive_steps_from_any_start():
    sigmas = torch.tensor([0.99, 0.8, 0.6, 0.3, 0.0])
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(2))
    path = UniPC().start(sigmas, FM)
    x0 = FM.denoised(x, _velocity(x, sigmas[2]), sigmas[2])
    # the first step of a trajectory has no history: first order, the Euler step
    first = path.step(2, x, x0)
    assert torch.allclose(first, euler_step(x, x0, sigmas[2], sigmas[3]), atol=1e-6)
    with pytest.raises(ValueError, match="does not follow"):
        path.step(2, first, x0)
    with pytest.raises(ValueError, match="outside"):
        UniPC().start(sigmas, FM).step(4, x, x0)
    with pytest.raises(ValueError, match="variant"):
        UniPC(variant="bh3")


# ---- the long-video methods on UniPC ------------------------------------------------------------------

CLIP = 25
STEPS = 6
LATENT = (4, 3, 3)


class _Toy:
    """test_long_samplers' toy denoiser (3-tap temporal mixing, frame index, image override) with a solver."""

    def __init__(self, solver=None) -> None:
        self.solver = solver
        self.image = torch.linspace(-1, 1, LATENT[0] * LATENT[1] * LATENT[2]).reshape(1, *LATENT)
        self.calls = 0
        self.frame_passes = 0
        self.inputs: list[tuple[int, float, torch.Tensor, torch.Tensor]] = []  # (start, sigma, x, x0)

    def __call__(self, x, sigma, frames=None, image=None):
        self.calls += 1
        self.frame_passes += x.shape[1]
        padded = torch.cat([x[:, :1], x, x[:, -1:]], dim=1)
        mixed = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
        index = torch.arange(frames.start, frames.stop, dtype=x.dtype)[None, :, None, None, None]
        img = (self.image if image is None else image)[:, None]
        c = 1.0 / (sigma**2 + 1.0)
        x0 = c * torch.tanh(mixed) + (1 - c) * (img + 0.1 * torch.sin(index))
        self.inputs.append((frames.start, float(sigma), x.clone(), x0))
        return x0


def _karras(steps: int = STEPS) -> torch.Tensor:
    ramp = torch.linspace(0, 1, steps)
    s = (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    return torch.cat([s, torch.zeros(1)])


def _long(method: str, n: int, solver=None, **opts):
    den = _Toy(solver)
    options = LongOptions(method=method, **opts)
    chunks = list(sample_long(
        options, den, FrameNoise(n, LATENT, seed=0), _karras(), clip_len=CLIP,
        generator=torch.Generator().manual_seed(0), condition_on=lambda last, index: {"image": last * 0.5},
    ))  # fmt: skip
    return chunks, den, options


@pytest.mark.parametrize("method", ["phased", "direct", "freenoise", "gen-l-video"])
@pytest.mark.parametrize("n", [1, 26, 125])
def test_every_method_on_unipc_gives_the_frames_at_the_formulas_cost(method, n):
    chunks, den, options = _long(method, n, UniPC(), gamma=0.5)
    start = 0
    for chunk in chunks:
        assert chunk.start == start and torch.isfinite(chunk.latents).all()
        start += chunk.latents.shape[1]
    assert start == n
    cost = expected_cost(options, n, CLIP, STEPS)
    assert (den.calls, den.frame_passes) == (cost.denoiser_calls, cost.frame_passes)


@pytest.mark.parametrize("method", ["phased", "direct", "freenoise", "gen-l-video"])
def test_within_one_clip_every_method_is_one_unipc_trajectory(method):
    # up to one clip every method samples the clip once: with UniPC that is sample_ode on it, not Euler
    n = 20
    video = torch.cat([c.latents for c in _long(method, n, UniPC())[0]], 1)
    start = FrameNoise(n, LATENT, seed=0).frames(0, n) * _karras()[0]
    one = sample_ode(_Toy(UniPC()), start, _karras(), frames=slice(0, n))
    euler = sample_ode(_Toy(), start, _karras(), frames=slice(0, n))
    assert torch.allclose(video, one, atol=1e-6)
    assert (video - euler).abs().max() > 1e-3


def test_direct_restarts_the_history_per_clip():
    chunks, _, _ = _long("direct", 50, UniPC())
    # clip 2 is a fresh sample from its own noise, conditioned on clip 1's last latent
    start = FrameNoise(50, LATENT, seed=0).frames(25, 50) * _karras()[0]
    den = _Toy(UniPC())

    def conditioned(x, sigma, **cond):
        return den(x, sigma, image=chunks[0].latents[:, -1] * 0.5, **cond)

    conditioned.solver = UniPC()
    clip2 = sample_ode(conditioned, start, _karras(), frames=slice(25, 50))
    assert torch.allclose(chunks[1].latents, clip2, atol=1e-6)


def _phased_on_unipc(frames: int, overlap: int, carry: str):
    """(levels, the toy denoiser on UniPC, the chunks) of phased with gamma 0.5, omega 0 and no shuffle."""
    sigmas = _karras()
    den = _Toy(UniPC())
    chunks = list(sample_phased(den, FrameNoise(frames, LATENT, seed=0), sigmas, segment_len=CLIP, gamma=0.5,
                                omega=0.0, overlap=overlap, carry=carry, shuffle=False))  # fmt: skip
    return sigmas, den, chunks


def test_phased_later_segments_restart_the_history_at_the_branch():
    # omega 0, no shuffle, no overlap, the paper's copy: segment 2 starts from segment 1's state at the branch
    # step M (its x0 plus its read-out noise), so it is a fresh UniPC trajectory from that state over the
    # last T - M levels on its own frames
    sigmas, den, chunks = _phased_on_unipc(50, overlap=0, carry="copy")
    m = 3
    x_m = den.inputs[m][2]  # segment 1's state at level M, as the denoiser saw it
    assert den.inputs[m][1] == float(sigmas[m]) and den.inputs[STEPS][0] == 25
    fresh = sample_ode(_Toy(UniPC()), x_m, sigmas[m:], frames=slice(25, 50))
    assert torch.allclose(chunks[1].latents, fresh, atol=1e-5)
    # carrying segment 1's history into segment 2 would have given another result
    carried = UniPC().start(sigmas, VPredictionEDM())
    x = den.inputs[0][2]
    for i in range(m):
        x = carried.step(i, x, den.inputs[i][3])
    toy = _Toy()
    x = x_m
    for i in range(m, STEPS):
        x = carried.step(i, x, toy(x, sigmas[i], frames=slice(25, 50)))
    assert (x - chunks[1].latents).abs().max() > 1e-4


def test_phased_anchor_holds_exactly_on_every_state_with_unipc():
    # overlap 1: position 0 of a later segment is the previous segment's last latent noised with the
    # segment's own noise (omega 0, no shuffle: segment 1's read-out noise at the branch) at every level
    sigmas, den, chunks = _phased_on_unipc(49, overlap=1, carry="own")
    m = 3
    _, _, x_m, x0_m = den.inputs[m]
    noise = (x_m - x0_m) / sigmas[m]  # EDM read-out
    prev = chunks[0].latents[:, -1]
    later = [entry for entry in den.inputs if entry[0] == 24]
    assert len(later) == STEPS - m
    for _, sigma, x, _ in later:
        assert torch.allclose(x[:, 0], prev + sigma * noise[:, 0], atol=1e-5), sigma
