"""PiGDM: pseudoinverse-guided diffusion models.

Song, Vahdat, Mardani & Kautz 2023, "Pseudoinverse-Guided Diffusion Models for Inverse Problems",
ICLR 2023, Eq. 5-8 (noisy form, Eq. 8). p(x0 | x_t) is approximated by N(x0_hat, r_t^2 I), so
    grad_x log p(y | x_t) ~= (d x0_hat / d x_t)^T A^T (r_t^2 A A^T + sigma_y^2 I)^-1 (y - A x0_hat),
a vector-Jacobian product. Written in the canonical sigma space, where the guided denoiser is
x0_hat + sigma^2 grad log p(y | x) (Tweedie with the conditional score), followed by a DDIM step.
r_t^2 = sigma^2 v / (sigma^2 + v) is the posterior variance for data of variance v (the paper: v = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Solver, ddim_step, solver_path
from .linalg import gram_solve, require_gaussian, require_linear
from .registry import register
from .schedules import timesteps


@register
@dataclass
class PiGDM(Solver):
    """PiGDM (Alg. 1) on a linear operator: 100 DDIM steps with eta = 1 (the paper's setting)."""

    name = "pigdm"
    description = "Pseudoinverse-guided diffusion (Song et al. 2023), linear operators"

    steps: int = 100
    eta: float = 1.0
    data_var: float = 1.0
    path: str | None = None
    spacing: str = "guided"

    def validate(self) -> None:
        if not 0 <= self.eta <= 1 or self.data_var <= 0:
            raise ValueError("pigdm: eta must lie in [0, 1] and data_var be > 0")

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        op = require_linear(problem.operator, self.name)
        like = self.like(problem)
        path = solver_path(prior, self.path)
        sigmas = path.sigma_canon(timesteps(path, self.steps, self.spacing)).tolist() + [0.0]
        s2y = require_gaussian(problem, self.name) ** 2
        data_var = self.data_var / prior.data_scale**2  # stated for the network's units
        x = sigmas[0] * self.randn(gens, problem) + prior.data_center
        one = torch.ones((), dtype=like.dtype, device=like.device)
        for i in self.iterate():
            s_t, s_n = sigmas[i], sigmas[i + 1]
            x = x.detach().requires_grad_(True)
            x0 = self.denoise_at(prior, x, s_t)
            r2 = s_t**2 * data_var / (s_t**2 + data_var)  # Eq. 5
            with torch.no_grad():
                u = gram_solve(op, problem.y - op.A(x0), r2, s2y)  # (r^2 A A^T + sigma_y^2 I)^-1 (y - A x0)
            (g,) = torch.autograd.grad(x0, x, grad_outputs=op.A_adjoint(u))  # Eq. 8: the VJP
            with torch.no_grad():
                x0g = x0 + s_t**2 * g  # guided Tweedie estimate
                noise = self.randn(gens, problem) if self.eta > 0 else None
                x = ddim_step(x, x0g, one, s_t * one, one, s_n * one, self.eta, noise)
            self.guard(x, i, "steps")
        return x.detach(), {}
