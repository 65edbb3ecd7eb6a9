"""The denoiser interface and the plain Euler sampler every other sampler builds on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor: ...


def euler_step(
    x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor
) -> torch.Tensor:
    """One Euler step of the probability-flow ODE dx/dsigma = (x - x0) / sigma."""
    return x + (x - x0) / sigma * (sigma_next - sigma)


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
    asks). ``callback(i, x, x0)`` is called after every step, e.g. for a progress bar.
    """
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], **cond)
        x = euler_step(x, x0, sigmas[i], sigmas[i + 1])
        if callback is not None:
            callback(i, x, x0)
    return x
