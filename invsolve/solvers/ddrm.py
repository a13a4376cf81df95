"""DDRM: denoising diffusion restoration models.

Kawar, Elad, Ermon & Song 2022, arXiv 2201.11793, Eq. 7-8 (written in the variance-exploding form the
paper uses): the sampler runs in the spectral space of A = U diag(s) V^T. Coordinates the operator does
not see (s_j = 0) follow DDIM; observed coordinates are pulled towards y_bar_j = (U^T y)_j / s_j,
softly while the diffusion noise is below the measurement noise sigma_y / s_j, and by eta_b otherwise.
Needs a decomposable operator (deepinv ``DecomposablePhysics``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Solver, solver_path
from .linalg import require_gaussian, require_svd
from .registry import register
from .schedules import timesteps


@register
@dataclass
class DDRM(Solver):
    """DDRM with the paper's defaults: 20 steps, eta = 0.85, eta_b = 1 (Sec. 5)."""

    name = "ddrm"
    description = "Denoising diffusion restoration models, SVD-based (Kawar et al. 2022)"

    steps: int = 20
    eta: float = 0.85
    eta_b: float = 1.0
    path: str | None = None
    spacing: str = "uniform"

    def validate(self) -> None:
        if not (0 <= self.eta <= 1 and 0 <= self.eta_b <= 1):
            raise ValueError(f"ddrm: eta and eta_b must lie in [0, 1], got {self.eta}, {self.eta_b}")

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        op = require_svd(problem.operator, self.name)
        like = self.like(problem)
        path = solver_path(prior, self.path)
        sigmas = path.sigma_canon(timesteps(path, self.steps, self.spacing)).tolist() + [0.0]
        sy = require_gaussian(problem, self.name)
        mask = op.mask.to(like.device)
        s = mask.abs() if mask.is_complex() else mask
        seen = s > 0
        s_safe = torch.where(seen, s, torch.ones_like(s))
        y_bar = torch.where(seen, op.U_adjoint(problem.y) / s_safe, 0)  # spectral measurement
        sy_j = sy / s_safe  # measurement noise per observed spectral coordinate

        def spectral_noise():
            return op.V_adjoint(self.randn(gens, problem))

        # Eq. 8 at t = T: observed coordinates start at y_bar with the remaining variance.
        s0 = sigmas[0]
        z = spectral_noise()
        init_obs = y_bar + torch.sqrt((s0**2 - sy_j**2).clamp_min(0)) * z
        xb = torch.where(seen & (sy_j < s0), init_obs, s0 * z)
        x = _real(op.V(xb))
        for i in self.iterate():
            s_t, s_n = sigmas[i], sigmas[i + 1]
            with torch.no_grad():
                x0 = self.denoise_at(prior, x, s_t)
            x0b, xb = op.V_adjoint(x0), op.V_adjoint(x)
            z = spectral_noise()
            c = (1 - self.eta**2) ** 0.5 * s_n
            unseen = x0b + c * (xb - x0b) / s_t + self.eta * s_n * z  # Eq. 7, s_j = 0
            soft = x0b + c * (y_bar - x0b) / torch.where(seen, sy_j, torch.ones_like(sy_j)) + self.eta * s_n * z
            hard = (1 - self.eta_b) * x0b + self.eta_b * y_bar + torch.sqrt(
                (s_n**2 - sy_j**2 * self.eta_b**2).clamp_min(0)) * z
            xb = torch.where(~seen, unseen, torch.where(s_n < sy_j, soft, hard))
            x = _real(op.V(xb))
            self.guard(x, i, "steps")
        return x, {}


def _real(x: Tensor) -> Tensor:
    return x.real if x.is_complex() else x
