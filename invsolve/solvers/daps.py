"""DAPS: decoupled annealing posterior sampling.

Zhang, Chu, Berner, Meng, Anandkumar & Song 2024, arXiv 2407.01521, Algorithm 1: for each annealing
level sigma_i, (1) estimate x0_hat(x_t) by a few Euler steps of the probability-flow ODE (Sec. 3.3),
(2) run Langevin dynamics on x0 targeting p(x0 | x_t, y) ~ N(x0; x0_hat, r_t^2 I) p(y | x0) with
r_t = sigma_i (Eq. 9-10), (3) re-noise: x_{t_{i+1}} = x0 + sigma_{i+1} eps. The measurement enters only
through the likelihood, so nonlinear operators work as they are.
Defaults are DAPS-1K: 200 levels from sigma 100 to 0.1 (poly-7 spacing), 5 ODE steps per level
(1000 NFE), 100 Langevin steps with lr 1e-4 decaying linearly to lr_min_ratio * lr.

The paper's step size is absolute, tuned for images in [-1, 1] with sigma_y = 0.05; the Langevin
update is stable only while lr < 2 / L, L = 1 / r_t^2 + ||A||^2 / sigma_y^2 the curvature of the
target, so one lr cannot serve every sigma_y (the GMM noise sweep shows it). ``step="lipschitz"`` (an
addition of this project, not in the paper) makes lr a fraction of 1 / L at each level, with ||A||^2
from a power iteration per sample: stable at any sigma_y for linear operators with Gaussian noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invsolve.paths import bcast
from invsolve.rng import randn

from .base import Solver, karras_sigmas
from .registry import register


@register
@dataclass
class DAPS(Solver):
    """DAPS with Langevin MCMC. ``tau`` overrides the likelihood's noise std (None: the problem's
    sigma_y, or DAPS's 0.01 for noiseless problems); the likelihood is the problem's misfit."""

    name = "daps"
    description = "Decoupled annealing posterior sampling, Langevin core (Zhang et al. 2024)"

    steps: int = 200
    ode_steps: int = 5
    mcmc_steps: int = 100
    lr: float = 1e-4
    lr_min_ratio: float = 0.01
    sigma_max: float = 100.0
    sigma_min: float = 0.1
    tau: float | None = None
    step: str = "fixed"

    def validate(self) -> None:
        if self.ode_steps < 1 or self.mcmc_steps < 0 or self.lr <= 0:
            raise ValueError("daps: ode_steps must be >= 1, mcmc_steps >= 0 and lr > 0")
        if self.step not in ("fixed", "lipschitz"):
            raise ValueError(f"daps: step must be 'fixed' (the paper's) or 'lipschitz', got {self.step!r}")
        if self.step == "lipschitz" and not self.lr < 2:
            raise ValueError(f"daps: with step='lipschitz' lr is a fraction of 1 / L and must be < 2, got {self.lr}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError("daps: need 0 < sigma_min < sigma_max")

    def expected_nfe(self) -> int:
        return self.steps * self.ode_steps

    @staticmethod
    def _misfit_var(problem) -> float:
        """The variance problem.misfit divides by (1 for noiseless problems)."""
        sigma = problem.noise_sigma
        return sigma**2 if sigma > 0 else 1.0

    def _likelihood_scale(self, problem) -> float:
        """Factor turning problem.misfit into ||y - A x||^2 / (2 tau^2) when tau is overridden."""
        sigma = problem.noise_sigma
        if self.tau is None and sigma not in (None, 0.0):
            return 1.0
        if problem.noise_sigma is None:
            if self.tau is not None:
                raise ValueError("daps: tau applies to Gaussian likelihoods only")
            return 1.0
        tau = 0.01 if self.tau is None else self.tau
        return self._misfit_var(problem) / tau**2

    def _likelihood_curvature(self, problem, scale: float) -> Tensor:
        """Per-sample ||A||^2 / tau^2, the largest curvature of the Gaussian likelihood (step="lipschitz").

        Power iteration on A^T A written here because deepinv's ``compute_sqnorm`` stops when the
        Rayleigh quotient changes by less than an absolute tol from zero, so a small or rank-one
        operator can stop at the first, nearly orthogonal, iterate (seen on the mixture benchmark:
        3e-9 for ||A||^2 = 0.49). Same start vector for every sample: batch-independent.
        """
        from deepinv.physics import LinearPhysics

        op = problem.operator
        if problem.noise_sigma is None or not isinstance(op, LinearPhysics):
            raise ValueError("daps: step='lipschitz' needs a linear operator (deepinv LinearPhysics) and "
                             "Gaussian noise; use step='fixed' (the paper's) otherwise")
        dtype = problem.y.real.dtype
        x = torch.randn(problem.x_shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
        x = x.to(problem.y.device).expand(len(problem), *problem.x_shape).clone()
        dims = tuple(range(1, x.ndim))
        norm2 = torch.zeros(len(problem), dtype=dtype, device=x.device)
        with torch.no_grad():
            for _ in range(1000):
                x = x / x.pow(2).sum(dims, keepdim=True).sqrt().clamp_min(1e-300)
                y = op.A_adjoint_A(x).real
                new = (x * y).sum(dims)  # Rayleigh quotient of the unit x
                done = ((new - norm2).abs() <= 1e-9 * new.abs()).all()
                norm2, x = new, y
                if done:
                    break
        return norm2 * scale / self._misfit_var(problem)

    def ode_x0(self, prior, x: Tensor, sigma: float) -> Tensor:
        """x0_hat(x_t): Euler steps of dx/dsigma = (x - D(x, sigma)) / sigma from sigma to 0.01."""
        sig = karras_sigmas(self.ode_steps + 1, min(0.01, sigma), sigma).tolist()
        for j in range(self.ode_steps):
            d = x - self.denoise_at(prior, x, sig[j])
            x = x + (sig[j + 1] - sig[j]) * d / sig[j]
        return x

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        sigmas = karras_sigmas(self.steps, self.sigma_min, self.sigma_max).tolist()
        scale = self._likelihood_scale(problem)
        curv = self._likelihood_curvature(problem, scale) if self.step == "lipschitz" else None
        x = sigmas[0] * self.randn(gens, problem)
        for i in self.iterate():
            s = sigmas[i]
            with torch.no_grad():
                x0_hat = self.ode_x0(prior, x, s)  # step 1
            lr = self.lr * (1 + (i / max(self.steps - 1, 1)) * (self.lr_min_ratio - 1))
            if curv is not None:  # per-sample step c / L, L = 1 / r_t^2 + ||A||^2 / tau^2
                lr = bcast(lr / (1 / s**2 + curv), x)
            x0 = x0_hat.clone()
            # All of this level's Langevin noise in one draw per sample (one generator call, not mcmc_steps).
            kicks = randn(gens, (self.mcmc_steps, *problem.x_shape), x0) if self.mcmc_steps else None
            for k in range(self.mcmc_steps):  # step 2: Langevin on p(x0 | x_t, y)
                x0 = x0.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(scale * problem.misfit(x0).sum(), x0)
                with torch.no_grad():
                    x0 = x0 - lr * (g + (x0 - x0_hat) / s**2) + (2 * lr) ** 0.5 * kicks[:, k]
            x0 = x0.detach()
            self.guard(x0, i, "lr")
            if i + 1 < self.steps:
                x = x0 + sigmas[i + 1] * self.randn(gens, problem)  # step 3: re-noise
        return x0, {}
