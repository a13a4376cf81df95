"""OT-ODE: training-free linear inverse problems with conditional-OT flows.

Pokle, Muckley, Chen & Karrer 2023, "Training-free Linear Image Inverses via Flows", arXiv 2310.04432,
Sec. 3 and Algorithm 1. On the linear path with noise at t = 0, x_t = t x1 + (1 - t) x0 (x1 data,
x0 noise), the velocity is v(x_t) = x_t / t + (1 - t) / t grad log p_t(x_t), so conditioning on y adds
(1 - t) / t grad log p(y | x_t) to it. That likelihood score is PiGDM's (Song et al. 2023, Eq. 8) with
p(x1 | x_t) ~= N(x1_hat, r_t^2 I):
    grad log p(y | x_t) ~= (d x1_hat / d x_t)^T A^T (r_t^2 A A^T + sigma_y^2 I)^-1 (y - A x1_hat),
    x1_hat = x_t + (1 - t) v(x_t),   r_t^2 = (1 - t)^2 / (t^2 + (1 - t)^2)   (data of unit variance),
a vector-Jacobian product through the velocity. Euler steps from a start time t0 > 0, initialised at
x_t0 = t0 A^+ y + (1 - t0) eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from invsolve import paths as P

from .base import Solver
from .linalg import gram_solve, require_linear
from .registry import register


@register
@dataclass
class OTODE(Solver):
    """OT-ODE (Alg. 1): ``steps`` Euler steps of the conditional velocity from t0 to 1, one network call
    (and one VJP) each, so NFE = steps. Defaults: t0 = 0.2 (the paper uses 0.2-0.4), gamma "constant"
    (gamma_t = 1; "sqrt" is the paper's gamma_t = sqrt(t / (t^2 + (1 - t)^2))), data variance 1.

    The reference runs 100 steps on [0, 1] and skips the first t0 * 100; here all ``steps`` are spent
    on [t0, 1] (step size (1 - t0) / steps).
    """

    name = "ot_ode"
    description = "Conditional-OT ODE with PiGDM correction (Pokle et al. 2023), linear operators"

    steps: int = 100
    t0: float = 0.2
    gamma: str = "constant"
    data_var: float = 1.0
    init: str = "pinv"

    def validate(self) -> None:
        if not 0 < self.t0 < 1:
            raise ValueError(f"ot_ode: t0 must lie in (0, 1), got {self.t0}")
        if self.gamma not in ("constant", "sqrt"):
            raise ValueError(f"ot_ode: gamma must be 'constant' or 'sqrt', got {self.gamma!r}")
        if self.init not in ("pinv", "adjoint") or self.data_var <= 0:
            raise ValueError("ot_ode: init must be 'pinv' or 'adjoint' and data_var > 0")

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        op = require_linear(problem.operator, self.name)
        if problem.noise_sigma is None:
            raise ValueError("ot_ode assumes Gaussian measurement noise; try dps for Poisson noise")
        like = self.like(problem)
        path = P.LinearFlow(noise_at_zero=True)  # the paper's convention: noise at t = 0, data at 1
        s2y, v = problem.noise_sigma**2, self.data_var
        with torch.no_grad():
            y_inv = op.A_dagger(problem.y) if self.init == "pinv" else op.A_adjoint(problem.y)
            x = self.t0 * y_inv.real.to(like.dtype) + (1 - self.t0) * self.randn(gens, problem)  # Alg. 1, l. 1
        dt = (1 - self.t0) / self.steps
        for i in self.iterate():
            t = self.t0 + i * dt
            tb = torch.full((len(problem),), t, dtype=like.dtype, device=like.device)
            x = x.detach().requires_grad_(True)
            vel = prior.velocity_at(x, tb, path)
            x1 = x + (1 - t) * vel  # Tweedie estimate of the data endpoint
            r2 = v * (1 - t) ** 2 / (v * t**2 + (1 - t) ** 2)  # Sec. 3.2: Var[x1 | x_t] for N(0, v I) data
            with torch.no_grad():
                u = gram_solve(op, problem.y - op.A(x1), r2, s2y)  # (r_t^2 A A^T + sigma_y^2 I)^-1 (y - A x1_hat)
            (g,) = torch.autograd.grad(x1, x, grad_outputs=op.A_adjoint(u))  # the VJP: grad log p(y | x_t)
            gam = 1.0 if self.gamma == "constant" else math.sqrt(t / (t**2 + (1 - t) ** 2))
            with torch.no_grad():
                x = x + dt * (vel + gam * (1 - t) / t * g)  # Euler step of the conditional velocity
            self.guard(x, i, "t0")
        return x.detach(), {}
