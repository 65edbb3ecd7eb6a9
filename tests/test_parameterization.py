"""The parameterisations (sampling.parameterization): each formula once, and what it must equal."""

from __future__ import annotations

import torch

from stillmotion.sampling.base import euler_step
from stillmotion.sampling.parameterization import (
    EDM,
    FlowMatching,
    VPredictionEDM,
    parameterization_of,
    shift_sigma,
)


def _draws(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(2, 3, 4, 5, 5, generator=g)
    n = torch.randn(2, 3, 4, 5, 5, generator=g)
    return x0, n


def test_edm_is_svd_v_prediction_bit_for_bit():
    x0, n = _draws()
    sigma = torch.tensor([0.3, 7.0]).view(2, 1, 1, 1, 1)
    x = EDM.noised(x0, n, sigma)
    assert torch.equal(x, x0 + sigma * n)
    assert torch.allclose(EDM.noise_of(x, x0, sigma), n, atol=1e-5)
    assert torch.equal(EDM.signal(x0, sigma) + EDM.prior(n, sigma), x0 + n * sigma)
    # the true v of SVD's parameterisation: v = (sigma^2 + 1)^-1/2 * (... ) chosen so c_skip x + c_out v = x0
    c_skip, c_out, c_in = EDM.scalings(sigma)
    v = (x0 - c_skip * x) / c_out
    assert torch.allclose(EDM.train_denoised(x, v, sigma), x0, atol=1e-5)
    assert torch.allclose(EDM.denoised(x, v, sigma), x0, atol=1e-5)
    # the trainer's old inline formulas, op for op
    assert torch.equal(c_in, 1 / (sigma**2 + 1).sqrt())
    old = 1 / (sigma**2 + 1) * x + -sigma / (sigma**2 + 1).sqrt() * v
    assert torch.equal(EDM.train_denoised(x, v, sigma), old)
    assert torch.equal(EDM.timestep(torch.tensor(2.0)), 0.25 * torch.tensor(2.0).log())
    # loss = MSE on v (the v-weighting)
    v_hat = v + 0.1 * torch.randn_like(v, generator=torch.Generator().manual_seed(1))
    loss = EDM.loss(EDM.train_denoised(x, v_hat, sigma), x0, sigma)
    assert torch.allclose(loss, ((v_hat - v) ** 2).mean(), rtol=1e-4)
    normal = torch.randn(4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(EDM.training_sigma(normal, 0.7, 1.6), (0.7 + 1.6 * normal).exp())
    custom = VPredictionEDM(timestep_fn=lambda s: s * 10)
    assert float(custom.timestep(torch.tensor(0.5))) == 5.0


def test_flow_matching_interpolates_and_predicts_velocity():
    fm = FlowMatching()
    x0, n = _draws(3)
    t = torch.tensor([0.25, 0.9]).view(2, 1, 1, 1, 1)
    x = fm.noised(x0, n, t)
    assert torch.allclose(x, (1 - t) * x0 + t * n)
    assert torch.allclose(fm.noise_of(x, x0, t), n, atol=1e-5)
    assert torch.allclose(fm.signal(x0, t) + fm.prior(n, t), x, atol=1e-6)
    v = n - x0
    assert torch.allclose(fm.denoised(x, v, t), x0, atol=1e-6)
    assert torch.allclose(fm.train_denoised(x, v, t), x0, atol=1e-6)
    assert torch.equal(fm.timestep(torch.tensor(0.5)), torch.tensor(500.0))
    v_hat = v + 0.1 * torch.randn_like(v, generator=torch.Generator().manual_seed(4))
    loss = fm.loss(fm.train_denoised(x, v_hat, t), x0, t)
    assert torch.allclose(loss, ((v_hat - v) ** 2).mean(), rtol=1e-4)
    # k-diffusion's map: the flow state is an EDM state of sigma = t / (1 - t), scaled by 1 / (1 - t)
    x_edm, s_edm = fm.to_edm(x, t)
    assert torch.allclose(x_edm, EDM.noised(x0, n, s_edm), atol=1e-5)
    # training times are in (0, 1) and shifted toward noise
    normal = torch.randn(1000, generator=torch.Generator().manual_seed(5))
    times = fm.training_sigma(normal, shift=3.0)
    assert float(times.min()) > 0 and float(times.max()) < 1
    assert float(times.median()) > float(fm.training_sigma(normal).median())


def test_one_euler_step_serves_both_and_matches_diffusers_flow_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    fm = FlowMatching()
    sched = FlowMatchEulerDiscreteScheduler(shift=5.0)
    sched.set_timesteps(4)
    x = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(6))
    v = torch.randn_like(x, generator=torch.Generator().manual_seed(7))
    t, t_next = sched.sigmas[1], sched.sigmas[2]
    theirs = x + (t_next - t) * v  # diffusers' flow Euler step, written out
    sched._step_index = 1
    stepped = sched.step(v, sched.timesteps[1], x, return_dict=False)[0]
    assert torch.allclose(stepped, theirs, atol=1e-6)
    ours = euler_step(x, fm.denoised(x, v, t), t, t_next)
    assert torch.allclose(ours, stepped, atol=1e-5)
    # the same step taken in k-diffusion's EDM coordinates, mapped back, is the same state
    x_e, s_e = fm.to_edm(x, t)
    _, s_e_next = fm.to_edm(x, t_next)
    x0 = fm.denoised(x, v, t)
    back = euler_step(x_e, x0, s_e, s_e_next) * (1 - t_next)
    assert torch.allclose(back, ours, atol=1e-5)
    # the first schedule level of a flow model is t = 1: the prior is pure noise
    assert float(sched.sigmas[0]) == 1.0
    assert torch.equal(fm.prior(x, sched.sigmas[0]), x)


def test_shift_and_default_parameterisation():
    assert shift_sigma(1.0, 5.0) == 1.0 and shift_sigma(0.0, 5.0) == 0.0
    assert abs(shift_sigma(0.5, 3.0) - 0.75) < 1e-12

    class Plain:
        pass

    class Flow:
        parameterization = FlowMatching()

    assert parameterization_of(Plain()) is EDM
    assert isinstance(parameterization_of(Flow()), FlowMatching)
