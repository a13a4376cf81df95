"""DiffPIR: denoising diffusion models for plug-and-play image restoration.

Zhu, Zhang, Liang, Cao, Wen, Timofte & Van Gool 2023, CVPR workshops, arXiv 2305.08995, Algorithm 1:
per step a denoiser estimate x0 = D(x_t, sigma_t), a proximal data step
x0_hat = argmin ||y - A x||^2 + rho_t ||x - x0||^2 with rho_t = lambda sigma_n^2 / sigma_t^2 (Eq. 12-13),
then x_{t-1} = x0_hat + sigma_{t-1} (sqrt(1 - zeta) eps_hat + sqrt(zeta) eps) (Eq. 15), all in the
canonical sigma space (the paper's VP form divided by sqrt(alpha_bar)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Solver, solver_path
from .linalg import prox_data, require_gaussian, require_linear
from .registry import register
from .schedules import timesteps


@register
@dataclass
class DiffPIR(Solver):
    """DiffPIR with lambda = 7 (the paper's recommended range 3-25) and zeta = 0.3, 100 steps."""

    name = "diffpir"
    description = "Plug-and-play diffusion with a proximal data step (Zhu et al. 2023)"

    steps: int = 100
    lam: float = 7.0
    zeta: float = 0.3
    path: str | None = None
    spacing: str = "linspace"

    def validate(self) -> None:
        if not 0 <= self.zeta <= 1 or self.lam < 0:
            raise ValueError("diffpir: zeta must lie in [0, 1] and lam be >= 0")

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        op = require_linear(problem.operator, self.name)
        path = solver_path(prior, self.path)
        sigmas = path.sigma_canon(timesteps(path, self.steps, self.spacing)).tolist() + [0.0]
        s2n = require_gaussian(problem, self.name) ** 2
        x = sigmas[0] * self.randn(gens, problem) + prior.data_center
        for i in self.iterate():
            s_t, s_n = sigmas[i], sigmas[i + 1]
            with torch.no_grad():
                x0 = self.denoise_at(prior, x, s_t)
                x0 = prox_data(op, x0, problem.y, self.lam * s2n / s_t**2)  # Eq. 12-13
                eps_hat = (x - x0) / s_t
                eps = self.randn(gens, problem)
                x = x0 + s_n * ((1 - self.zeta) ** 0.5 * eps_hat + self.zeta**0.5 * eps)  # Eq. 15
            self.guard(x, i, "lam")
        return x, {}
