"""UniPC (Zhao et al., "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models", arXiv 2302.04867), multistep, in its data-prediction form, over any x0-predicting denoiser.

A state at level sigma is ``x = alpha x0 + s n`` (the parameterisation's ``signal_noise_scales``: flow
matching ``(1 - t, t)``, SVD's EDM form ``(1, sigma)``), and the solver steps in ``lambda = log(alpha / s)``.
From level a to level b, ``h = lambda_b - lambda_a``, with x0 estimates ``m`` of earlier levels kept:

    x_b = (s_b / s_a) x_a + alpha_b (1 - e^-h) m_a - alpha_b B(h) sum_k c_k D_k

where ``D_k = (m_k - m_a) / r_k``, ``r_k = (lambda_k - lambda_a) / h`` for the p - 1 earlier estimates of
an order-p step (the predictor UniP-p), and for the corrector UniC-p one more term, the new estimate at b
itself (``r = 1``, ``D = m_b - m_a``). ``B(h)`` is ``-h`` ("bh1") or ``e^-h - 1`` ("bh2", Wan's choice); the
coefficients solve the paper's order conditions ``sum_k c_k r_k^(q-1) = q! psi_q(h) / B(h)``, q = 1..n,
``psi_q(h) = (-h) phi_(q+1)(-h)``, except that a single term takes the paper's 1/2. Order 1 without a
correction is DDIM, which is the Euler step of ``sampling.base`` in both parameterisations.

How a step runs (one denoiser call each, as in the paper's UniPC-p): the estimate at the new state first
corrects that state (UniC, from the previous state and the estimates, at the order of the step that made
it), then the predictor steps on from the corrected state with the estimate made at the uncorrected one;
the corrected state is never evaluated again. The order warms up from 1 as estimates accumulate, and with
``lower_order_final`` it drops again for the last steps (the last one is order 1; a step to level 0 always
is, landing on the x0 estimate). A level with ``alpha = 0`` (flow time 1) has ``lambda = -inf``: steps from
it are order 1 and it is never used for a correction. This is what diffusers' ``UniPCMultistepScheduler``
computes with ``predict_x0=True`` (tests compare the two), written here on the project's solver interface
(``sampling.base``): a trajectory keeps the history, so what the long-video samplers call one trajectory
decides which estimates a step sees.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from stillmotion.sampling.base import Project

UNIPC_VARIANTS = ("bh1", "bh2")


class UniPC:
    """The UniPC solver: ``order`` (Wan: 2), ``variant`` bh1 / bh2 (Wan: bh2), ``lower_order_final``
    (Wan: on), ``corrector`` (UniC; off gives the plain multistep UniP) and ``disable_corrector`` (steps,
    counted in the trajectory's schedule, whose state is not corrected; diffusers' option)."""

    name = "unipc"

    def __init__(
        self,
        order: int = 2,
        variant: str = "bh2",
        lower_order_final: bool = True,
        corrector: bool = True,
        disable_corrector: Iterable[int] = (),
    ) -> None:
        if not (isinstance(order, int) and order >= 1):
            raise ValueError(f"UniPC order must be an integer >= 1, got {order!r}")
        if variant not in UNIPC_VARIANTS:
            raise ValueError(f"UniPC variant must be one of {', '.join(UNIPC_VARIANTS)}, got {variant!r}")
        self.order = order
        self.variant = variant
        self.lower_order_final = bool(lower_order_final)
        self.corrector = bool(corrector)
        self.disable_corrector = frozenset(int(i) for i in disable_corrector)

    def __repr__(self) -> str:
        return (
            f"UniPC(order={self.order}, variant={self.variant!r}, "
            f"lower_order_final={self.lower_order_final})"
        )

    def start(self, sigmas: torch.Tensor, parameterization: Any) -> UniPCTrajectory:
        return UniPCTrajectory(self, sigmas, parameterization)


class UniPCTrajectory:
    """One integration over ``sigmas``: consecutive steps from any index on (a sampler may start in the
    middle of a schedule, e.g. phased's later segments). A state passed to :meth:`step` is kept for the
    next step's correction: it must not be changed in place afterwards."""

    def __init__(self, solver: UniPC, sigmas: torch.Tensor, parameterization: Any) -> None:
        self.solver = solver
        sig = torch.as_tensor(sigmas).detach().to("cpu", torch.float64)
        alpha, s = parameterization.signal_noise_scales(sig)
        self.alpha, self.s = alpha.tolist(), s.tolist()
        self.lam = (alpha.log() - s.log()).tolist()  # -inf at alpha = 0, +inf at s = 0
        self.steps = len(self.lam) - 1
        self.history: list[tuple[int, torch.Tensor]] = []  # (level, x0 estimate), newest last
        self.last: tuple[int, torch.Tensor, int] | None = None  # previous step: level, state, order

    def step(
        self, i: int, x: torch.Tensor, x0: torch.Tensor, project: Project | None = None
    ) -> torch.Tensor:
        if not 0 <= i < self.steps:
            raise ValueError(f"step {i} outside the schedule's {self.steps} steps")
        if self.last is not None and self.last[0] != i - 1:
            raise ValueError(f"step {i} does not follow step {self.last[0]}: start a new trajectory")
        sv = self.solver
        if (
            self.last is not None and sv.corrector and i - 1 not in sv.disable_corrector
            and math.isfinite(self.lam[i - 1])
        ):  # fmt: skip
            prev_level, prev_x, prev_order = self.last
            x = self._update(prev_x, prev_level, i, prev_order, new=x0)
            if project is not None:
                x = project(x, i)
        self.history = [*self.history[-(sv.order - 1) :], (i, x0)] if sv.order > 1 else [(i, x0)]
        order = sum(1 for level, _ in self.history if math.isfinite(self.lam[level]))
        order = min(sv.order, max(order, 1))
        if sv.lower_order_final:
            order = min(order, self.steps - i)
        if self.s[i + 1] == 0:
            order = 1  # to level 0 (lambda = inf) the step lands on the estimate; higher terms are undefined
        self.last = (i, x, order)
        x_next = self._update(x, i, i + 1, order)
        return x_next if project is None else project(x_next, i + 1)

    def _update(
        self, x: torch.Tensor, a: int, b: int, order: int, new: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The state at level b from the state x at level a: the predictor of ``order`` (``new`` None) or
        the corrector of ``order`` with the estimate ``new`` made at level b."""
        lam, alpha, s = self.lam, self.alpha, self.s
        level_a, m_a = self.history[-1]
        if level_a != a:
            raise RuntimeError("UniPC history out of step")  # a bug, not a user error
        h = lam[b] - lam[a]
        if h == 0:
            return x  # a repeated level (a final sigma_min): no step
        z = -h
        out = x * (s[b] / s[a]) + m_a * (-alpha[b] * math.expm1(z))
        rs: list[float] = []
        ds: list[torch.Tensor] = []
        for k in range(1, order):
            level_k, m_k = self.history[-1 - k]
            r = (lam[level_k] - lam[a]) / h
            rs.append(r)
            ds.append((m_k - m_a) / r)
        if new is not None:
            rs.append(1.0)
            ds.append(new - m_a)
        if not ds:
            return out
        big_b = z if self.solver.variant == "bh1" else math.expm1(z)
        coeffs = _coefficients(rs, z, big_b)
        res = ds[0] * coeffs[0]
        for c, d in zip(coeffs[1:], ds[1:], strict=True):
            res = res + d * c
        return out - res * (alpha[b] * big_b)


def _coefficients(rs: list[float], z: float, big_b: float) -> list[float]:
    """The c_k of the module docstring for ratios ``rs`` at ``z = -h``."""
    n = len(rs)
    if n == 1:
        return [0.5]  # the paper's choice for one term (UniP-2, UniC-1)
    psi = math.expm1(z) / z - 1  # z phi_2(z)
    g = []
    fact = 1
    for q in range(1, n + 1):
        g.append(psi * fact / big_b)
        fact *= q + 1
        psi = psi / z - 1 / fact  # z phi_(q+2)(z) from z phi_(q+1)(z)
    vander = torch.tensor([[r**p for r in rs] for p in range(n)], dtype=torch.float64)
    return torch.linalg.solve(vander, torch.tensor(g, dtype=torch.float64)).tolist()
