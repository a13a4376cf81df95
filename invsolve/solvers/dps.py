"""DPS: diffusion posterior sampling.

Chung, Kim, McCann, Klasky & Ye 2023, "Diffusion Posterior Sampling for General Noisy Inverse Problems",
ICLR 2023, arXiv 2209.14687, Algorithm 1 (Gaussian noise) and Algorithm 2 / Eq. 16 (Poisson noise).
Ancestral DDPM steps on the VP path, each followed by a gradient step on the measurement residual of
the Tweedie estimate x0_hat(x_t).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invsolve import paths as P

from .base import Solver, ddim_step, path_coefs, solver_path, start_state
from .registry import register
from .schedules import timesteps


@register
@dataclass
class DPS(Solver):
    """DPS (Alg. 1). ``zeta`` is the step scale of the official code: x_{i-1} -= zeta * grad ||y - A x0_hat||,
    the norm taken per sample; this equals the paper's zeta_i = zeta' / ||y - A x0_hat|| on the squared
    norm with zeta' = zeta / 2. Defaults: 1000 steps, zeta = 1.0 (the paper's FFHQ settings).

    ``likelihood``: "auto" follows the problem's noise model; "poisson" uses the weighted residual
    (y - A x0_hat) / sqrt(2 y) of Eq. 16 (Alg. 2), "gaussian" the plain residual.
    """

    name = "dps"
    description = "Diffusion posterior sampling (Chung et al. 2023, Alg. 1; Poisson: Alg. 2)"

    steps: int = 1000
    zeta: float = 1.0
    likelihood: str = "auto"
    clip: bool = True
    path: str | None = None
    spacing: str = "guided"

    def validate(self) -> None:
        if self.zeta < 0:
            raise ValueError(f"{self.name}: zeta must be >= 0, got {self.zeta}")
        if self.likelihood not in ("auto", "gaussian", "poisson"):
            raise ValueError(f"{self.name}: likelihood must be 'auto', 'gaussian' or 'poisson'")
        if self.path is not None:
            P.get_path(self.path)

    def residual_norms(self, problem, x0: Tensor) -> Tensor:
        """Per-sample ||y - A x0|| (Poisson: weighted by Lambda = diag(1 / (2 y)), Eq. 16), shape (B,)."""
        r = problem.residual(x0)
        kind = problem.noise.kind if self.likelihood == "auto" else self.likelihood
        if kind == "poisson":
            r = r / torch.sqrt(2 * problem.y.clamp_min(1e-3))
        return r.reshape(len(problem), -1).norm(dim=1)

    def project(self, problem, x: Tensor, a_s: Tensor, s_s: Tensor, gens) -> Tensor:
        """Hook after the gradient step (identity for DPS; MCG projects onto the measurement)."""
        return x

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        path = solver_path(prior, self.path)
        ts = timesteps(path, self.steps, self.spacing)
        like = self.like(problem)
        x = start_state(path, ts[0], self.randn(gens, problem))  # line 1: x_N ~ N(0, I)
        zeta = self.zeta / prior.data_scale  # the paper's zeta acts on network units
        lo_hi = prior.data_range if self.clip else None
        one, zero = torch.ones((), dtype=like.dtype), torch.zeros((), dtype=like.dtype)
        for i in self.iterate():
            a_t, s_t = path_coefs(path, ts[i], like)
            x = x.detach().requires_grad_(True)
            x0 = prior.x0_at(x, ts[i].to(like.dtype), path)  # lines 3-4: Tweedie estimate
            if lo_hi is not None:  # the official code's clip_denoised
                x0 = x0.clamp(*lo_hi)
            norms = self.residual_norms(problem, x0)  # per sample, never summed over the batch
            (grad,) = torch.autograd.grad(norms.sum(), x)
            a_s, s_s = path_coefs(path, ts[i + 1], like) if i + 1 < self.steps else (one, zero)
            noise = self.randn(gens, problem)
            with torch.no_grad():
                x = ddim_step(x, x0, a_t, s_t, a_s, s_s, 1.0, noise)  # lines 5-6: ancestral step
                x = x - zeta * grad  # line 7: measurement gradient step
                x = self.project(problem, x, a_s, s_s, gens)
            self.guard(x, i, "zeta")
        return x.detach(), {"residual_norm": norms.detach()}
