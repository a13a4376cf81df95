"""PnP-Flow: plug-and-play image restoration with flow matching.

Martin, Gagneux, Bertrand & Kervadec 2025, "PnP-Flow: Plug-and-Play Image Restoration with Flow
Matching", ICLR 2025, arXiv 2410.02423, Algorithm 1. On the linear path with noise at t = 0,
x_t = t x1 + (1 - t) eps, the flow denoiser is D_t(x) = x + (1 - t) v(x, t) (Eq. 7: the Tweedie
estimate of x1). Each step at t_n = n / N:
    z  = x - gamma_n grad F(x)                 (gradient step on the data term F)
    z~ = t_n z + (1 - t_n) eps                 (interpolation back onto the path at time t_n)
    x  = D_{t_n}(z~)                           (flow denoiser)
with gamma_n = lr (1 - t_n)^alpha. F = -log p(y | x) is ``problem.misfit``; as in the reference, lr is
in units of sigma_y^2 (gamma_n grad F = lr (1 - t_n)^alpha A^T (A x - y) for Gaussian noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invsolve import paths as P

from .base import Solver
from .registry import register


@register
@dataclass
class PnPFlow(Solver):
    """PnP-Flow (Alg. 1): ``steps`` iterations, ``samples`` noise draws averaged in the denoising step
    (NFE = steps * samples). Defaults: 100 steps, lr = 1, alpha = 0.5 (gamma_n = (1 - t_n)^0.5), one
    draw (the algorithm box; the reference configuration averages 5)."""

    name = "pnp_flow"
    description = "Plug-and-play flow matching: gradient step, re-noise, flow denoiser (Martin et al. 2025)"

    steps: int = 100
    lr: float = 1.0
    alpha: float = 0.5
    samples: int = 1

    def validate(self) -> None:
        if self.lr <= 0 or self.alpha < 0 or self.samples < 1:
            raise ValueError("pnp_flow: lr must be > 0, alpha >= 0 and samples >= 1")

    def expected_nfe(self) -> int:
        return self.steps * self.samples

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        like = self.like(problem)
        path = P.LinearFlow(noise_at_zero=True)  # the paper's convention: noise at t = 0, data at 1
        var = problem.noise_sigma**2 if problem.noise_sigma else 1.0  # misfit's own scale (see Problem)
        if hasattr(problem.operator, "A_adjoint"):
            x = problem.operator.A_adjoint(problem.y).real.to(like.dtype)
        else:
            x = torch.zeros((len(problem), *problem.x_shape), dtype=like.dtype, device=like.device)
        for i in self.iterate():
            t = min(max(i / self.steps, path.t_min), path.t_max)  # t_n = n / N, kept off the singular ends
            tb = torch.full((len(problem),), t, dtype=like.dtype, device=like.device)
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(problem.misfit(x).sum(), x)  # per-sample gradients of F
            with torch.no_grad():
                z = x - self.lr * var * (1 - t) ** self.alpha * grad  # gradient step, gamma_n = lr (1 - t)^a
                x = torch.zeros_like(z)
                for _ in range(self.samples):
                    zt = t * z + (1 - t) * self.randn(gens, problem)  # interpolation
                    x = x + zt + (1 - t) * prior.velocity_at(zt, tb, path)  # D_t(z~) = z~ + (1 - t) v
                x = x / self.samples
            self.guard(x, i, "lr")
        return x.detach(), {}
