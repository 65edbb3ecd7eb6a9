"""Parameterisations: how a backbone's network output, noise level and noisy sample relate.

One small class per parameterisation (as k-diffusion's ``external.py`` wraps models), shared by the
denoisers (inference), the samplers and the trainers, so each formula is written once:

- :class:`VPredictionEDM`: SVD's continuous v-prediction in EDM form (sigma_data = 1).
  ``x = x0 + sigma * n``; the network sees ``c_in * x`` at timestep ``0.25 * log(sigma)`` and predicts v;
  ``x0 = c_skip * x + c_out * v`` with ``c_skip = 1 / (sigma^2 + 1)``, ``c_out = -sigma / sqrt(sigma^2 + 1)``,
  ``c_in = 1 / sqrt(sigma^2 + 1)``. Training loss ``(1 + sigma^2) / sigma^2 * |x0_hat - x0|^2`` (equal to the
  plain MSE on v).
- :class:`FlowMatching`: rectified flow as Wan (and SD3, Flux) use it, with ``sigma`` standing for the flow
  time t in [0, 1]: ``x_t = (1 - t) * x0 + t * n``; the network sees ``x_t`` at timestep ``1000 * t`` and
  predicts the velocity ``v = n - x0``, so ``x0 = x_t - t * v`` (c_skip = 1, c_out = -t, c_in = 1). Training
  loss ``|v_hat - (n - x0)|^2 = |x0_hat - x0|^2 / t^2``. k-diffusion maps it onto the EDM form with
  ``sigma_edm = t / (1 - t)`` and ``x_edm = x_t / (1 - t)`` (:meth:`FlowMatching.to_edm`).

The samplers integrate in each parameterisation's own coordinates. The probability-flow ODE has the same
form in both, ``dx/dsigma = (x - x0) / sigma`` (for flow matching ``(x_t - x0) / t = n - x0 = v``), so one
Euler step (``sampling.base.euler_step``) serves both; what differs is putting noise back at a level
(:meth:`noised`), reading the noise out of a state (:meth:`noise_of`), the clean part of a state
(:meth:`signal`), the starting state (:meth:`prior`) and, for multistep solvers (``sampling.unipc``), the
state's scales ``x = alpha x0 + s n`` (:meth:`signal_noise_scales`). A sampler asks its denoiser for its
parameterisation with :func:`parameterization_of` (denoisers without one are SVD's EDM form).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Tensor = torch.Tensor


class VPredictionEDM:
    """SVD's v-prediction in EDM form; see the module docstring.

    ``timestep_fn(sigma) -> t`` overrides the network timestep for schedulers with discrete timesteps
    (default: SVD's continuous ``0.25 * log(sigma)``).
    """

    name = "v-prediction-edm"

    def __init__(self, timestep_fn: Callable[[Tensor], Tensor] | None = None) -> None:
        self._timestep_fn = timestep_fn

    # ---- the network's side ---------------------------------------------------------------------

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(c_skip, c_out, c_in)`` for noise level sigma (any shape that broadcasts against x)."""
        c_skip = 1 / (sigma**2 + 1)
        c_out = -sigma / (sigma**2 + 1).sqrt()
        c_in = 1 / (sigma**2 + 1).sqrt()
        return c_skip, c_out, c_in

    def timestep(self, sigma: Tensor) -> Tensor:
        if self._timestep_fn is not None:
            return self._timestep_fn(sigma)
        return 0.25 * sigma.log()

    def model_input(self, x: Tensor, sigma: Tensor) -> Tensor:
        return x / ((sigma**2 + 1) ** 0.5)

    def denoised(self, x: Tensor, model_out: Tensor, sigma: Tensor) -> Tensor:
        """x0 from the noisy x and the network's v."""
        return model_out * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)

    # ---- the sampler's side ---------------------------------------------------------------------

    def noised(self, x0: Tensor, noise: Tensor, sigma: Tensor | float) -> Tensor:
        """The state at level sigma for clean x0 and unit noise."""
        return x0 + sigma * noise

    def signal(self, x0: Tensor, sigma: Tensor | float) -> Tensor:
        """The clean part of a state at level sigma: ``noised(x0, n, s) = signal(x0, s) + prior(n, s)``
        (so an offset of the clean latents can be added to a state)."""
        return x0

    def noise_of(self, x: Tensor, x0: Tensor, sigma: Tensor | float) -> Tensor:
        """The unit noise that takes x0 to x at level sigma (inverse of :meth:`noised`)."""
        return (x - x0) / sigma

    def prior(self, noise: Tensor, sigma: Tensor | float) -> Tensor:
        """The starting state at the first level of a schedule: pure noise, ``sigma * n``."""
        return noise * sigma

    def signal_noise_scales(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha, s)`` with a state ``alpha * x0 + s * n`` at level sigma (multistep solvers step in
        ``log(alpha / s)``): ``(1, sigma)``."""
        return torch.ones_like(sigma), sigma

    # ---- the trainer's side ---------------------------------------------------------------------

    def training_sigma(self, normal: Tensor, mean: float, std: float) -> Tensor:
        """Noise levels for training from standard normal draws: LogNormal(mean, std) (EDM)."""
        return (mean + std * normal).exp()

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """Weight of ``|x0_hat - x0|^2``: SVD's v-weighting ``(1 + sigma^2) / sigma^2``."""
        return (1 + sigma**2) / sigma**2

    def train_denoised(self, noisy: Tensor, model_out: Tensor, sigma: Tensor) -> Tensor:
        """x0 from the network output in the trainer's form (``c_skip * x + c_out * v``)."""
        c_skip, c_out, _ = self.scalings(sigma)
        return c_skip * noisy + c_out * model_out

    def loss(self, x0_hat: Tensor, x0: Tensor, sigma: Tensor) -> Tensor:
        """The weighted denoising loss, averaged over every element."""
        return (self.loss_weight(sigma) * (x0_hat - x0) ** 2).mean()


class FlowMatching:
    """Rectified flow (Wan 2.x): ``x_t = (1 - t) x0 + t n``, network predicts ``v = n - x0``; see the module
    docstring. ``num_train_timesteps`` scales t to the network's timestep (1000 for Wan)."""

    name = "flow-matching"

    def __init__(self, num_train_timesteps: int = 1000) -> None:
        self.num_train_timesteps = int(num_train_timesteps)

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        one = torch.ones_like(sigma)
        return one, -sigma, one

    def timestep(self, sigma: Tensor) -> Tensor:
        return sigma * self.num_train_timesteps

    def model_input(self, x: Tensor, sigma: Tensor) -> Tensor:
        return x

    def denoised(self, x: Tensor, model_out: Tensor, sigma: Tensor) -> Tensor:
        return x - sigma * model_out

    def noised(self, x0: Tensor, noise: Tensor, sigma: Tensor | float) -> Tensor:
        return (1 - sigma) * x0 + sigma * noise

    def signal(self, x0: Tensor, sigma: Tensor | float) -> Tensor:
        return (1 - sigma) * x0

    def noise_of(self, x: Tensor, x0: Tensor, sigma: Tensor | float) -> Tensor:
        return (x - (1 - sigma) * x0) / sigma

    def prior(self, noise: Tensor, sigma: Tensor | float) -> Tensor:
        return noise * sigma

    def signal_noise_scales(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return 1 - sigma, sigma

    def to_edm(self, x: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor | float]:
        """k-diffusion's map onto the EDM form: ``(x_t / (1 - t), t / (1 - t))`` (t < 1)."""
        return x / (1 - sigma), sigma / (1 - sigma)

    def training_sigma(
        self, normal: Tensor, mean: float = 0.0, std: float = 1.0, shift: float = 1.0
    ) -> Tensor:
        """Flow times for training: logit-normal (SD3's choice), then the schedule's shift
        ``shift * t / (1 + (shift - 1) * t)``."""
        t = torch.sigmoid(mean + std * normal)
        return shift_sigma(t, shift)

    def loss_weight(self, sigma: Tensor) -> Tensor:
        return 1 / sigma**2

    def train_denoised(self, noisy: Tensor, model_out: Tensor, sigma: Tensor) -> Tensor:
        return noisy - sigma * model_out

    def loss(self, x0_hat: Tensor, x0: Tensor, sigma: Tensor) -> Tensor:
        return (self.loss_weight(sigma) * (x0_hat - x0) ** 2).mean()


Parameterization = VPredictionEDM | FlowMatching


def shift_sigma(t: Any, shift: float) -> Any:
    """The flow-matching time shift (Wan's ``flow_shift``, diffusers' ``shift``): more steps at high noise."""
    return shift * t / (1 + (shift - 1) * t)


EDM = VPredictionEDM()


def parameterization_of(denoiser: Any) -> Parameterization:
    """The denoiser's parameterisation (its ``parameterization`` attribute), SVD's EDM form if it has none."""
    found = getattr(denoiser, "parameterization", None)
    return EDM if found is None else found

