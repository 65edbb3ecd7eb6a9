"""The denoiser interface, the ODE solvers the samplers step with, and the plain sampler over them.

A *solver* turns a denoiser's x0 estimates into steps along a schedule. ``solver.start(sigmas,
parameterization)`` begins one trajectory (an integration over ``sigmas``) and returns an object with
``step(i, x, x0, project=None) -> x_next``: ``x`` is the state at ``sigmas[i]``, ``x0`` the denoiser's
estimate there, the result the state at ``sigmas[i + 1]``. :class:`Euler` keeps nothing between steps; a
multistep solver (``sampling.unipc.UniPC``) keeps the trajectory's earlier estimates, so a trajectory is
one run of consecutive steps and a new one restarts its history. ``project(x, j)``, when given, is applied
to every state the solver makes at level ``sigmas[j]`` (the step's result and, for a predictor-corrector
solver, the corrected current state), for samplers that pin part of the state (phased's anchors).

A denoiser names its solver with a ``solver`` attribute (a Wan model: the one its scheduler config asks
for); :func:`solver_of` gives it, Euler when it has none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from stillmotion.sampling.parameterization import parameterization_of


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor: ...


def euler_step(
    x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor
) -> torch.Tensor:
    """One Euler step of the probability-flow ODE dx/dsigma = (x - x0) / sigma."""
    return x + (x - x0) / sigma * (sigma_next - sigma)


Project = Callable[[torch.Tensor, int], torch.Tensor]


class Trajectory(Protocol):
    def step(
        self, i: int, x: torch.Tensor, x0: torch.Tensor, project: Project | None = None
    ) -> torch.Tensor: ...


class Solver(Protocol):
    name: str

    def start(self, sigmas: torch.Tensor, parameterization: Any) -> Trajectory: ...


class _EulerTrajectory:
    def __init__(self, sigmas: torch.Tensor) -> None:
        self.sigmas = sigmas

    def step(
        self, i: int, x: torch.Tensor, x0: torch.Tensor, project: Project | None = None
    ) -> torch.Tensor:
        x = euler_step(x, x0, self.sigmas[i], self.sigmas[i + 1])
        return x if project is None else project(x, i + 1)


class Euler:
    """Euler steps of the probability-flow ODE (:func:`euler_step`); the same in every parameterisation."""

    name = "euler"

    def start(self, sigmas: torch.Tensor, parameterization: Any = None) -> _EulerTrajectory:
        return _EulerTrajectory(sigmas)


EULER = Euler()


def solver_of(denoiser: Any) -> Solver:
    """The denoiser's solver (its ``solver`` attribute), Euler if it has none."""
    found = getattr(denoiser, "solver", None)
    return EULER if found is None else found


@torch.no_grad()
def sample_ode(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    solver: Solver | None = None,
    **cond: Any,
) -> torch.Tensor:
    """Integrate from ``sigmas[0]`` down to ``sigmas[-1]`` with ``solver``, by default the denoiser's own
    (:func:`solver_of`): one denoiser call per step, one trajectory. Otherwise as :func:`sample_euler`."""
    path = (solver or solver_of(denoiser)).start(sigmas, parameterization_of(denoiser))
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], **cond)
        x = path.step(i, x, x0)
        if callback is not None:
            callback(i, x, x0)
    return x


@torch.no_grad()
def sample_euler(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    **cond: Any,
) -> torch.Tensor:
    """Integrate from ``sigmas[0]`` down to ``sigmas[-1]`` (usually 0) with Euler steps.

    ``x`` must already be scaled to the first noise level (noise * sigmas[0], or as the scheduler
    asks). ``callback(i, x, x0)`` is called after every step, e.g. for a progress bar. Euler whatever
    solver the denoiser names (:func:`sample_ode` with :data:`EULER`).
    """
    return sample_ode(denoiser, x, sigmas, callback=callback, solver=EULER, **cond)
