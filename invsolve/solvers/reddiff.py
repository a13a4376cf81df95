"""RED-diff: a variational perspective on solving inverse problems with diffusion models.

Mardani, Song, Kautz & Vahdat 2023, arXiv 2305.04391, Algorithm 1 / Eq. 10-11: the mean mu of a
variational distribution is optimised by Adam over a descending sweep of diffusion times; at time t,
    loss(mu) = ||y - A(mu)||^2 / 2 + lambda_t sg(eps_hat(x_t, t) - eps)^T mu,  x_t = alpha_t mu + sigma_t eps,
with lambda_t = lambda sigma_t / alpha_t (inverse square-root SNR weighting). As in the official code both
terms are averaged over their elements (which is what the defaults lambda = 0.25, lr = 0.5 were tuned
for), per sample, and summed over the batch so that each sample's optimisation is independent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Solver, path_coefs, solver_path
from .registry import register
from .schedules import timesteps


def _mean(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).mean(1)


@register
@dataclass
class REDDiff(Solver):
    """RED-diff with the paper's defaults: 1000 steps, lambda = 0.25, Adam lr = 0.5, betas (0.9, 0.99),
    mu initialised at A^+ y for linear operators ("pinv") or at zero ("zero")."""

    name = "reddiff"
    description = "Variational RED-diff, Adam over a descending t sweep (Mardani et al. 2023)"

    steps: int = 1000
    lam: float = 0.25
    lr: float = 0.5
    obs_weight: float = 1.0
    init: str = "pinv"
    path: str | None = None
    spacing: str = "linspace"

    def validate(self) -> None:
        if self.init not in ("pinv", "zero"):
            raise ValueError(f"reddiff: init must be 'pinv' or 'zero', got {self.init!r}")
        if self.lr <= 0 or self.lam < 0:
            raise ValueError("reddiff: lr must be > 0 and lam >= 0")

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        path = solver_path(prior, self.path)
        ts = timesteps(path, self.steps, self.spacing)
        like = self.like(problem)
        if self.init == "pinv":
            if not hasattr(problem.operator, "A_dagger"):
                raise ValueError("reddiff init='pinv' needs an operator with A_dagger; use init='zero'")
            mu0 = problem.operator.A_dagger(problem.y).real.to(like.dtype)
        else:
            mu0 = torch.zeros((len(problem), *problem.x_shape), dtype=like.dtype, device=like.device)
        mu = mu0.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([mu], lr=self.lr / prior.data_scale, betas=(0.9, 0.99))  # lr: network units
        for i in self.iterate():
            t = ts[i].to(like.dtype)
            a_t, s_t = path_coefs(path, ts[i], like)
            eps = self.randn(gens, problem)
            with torch.no_grad():
                x_t = a_t * mu + s_t * eps
                x0 = prior.x0_at(x_t, t, path)
                eps_hat = (x_t - a_t * x0) / s_t
            fit = _mean(problem.residual(mu).abs() ** 2) / 2
            reg = _mean((eps_hat - eps) * mu)  # sg(eps_hat - eps)^T mu: eps terms carry no gradient
            loss = self.obs_weight * fit + self.lam * float(s_t / a_t) * reg
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            self.guard(mu.detach(), i, "lr")
        return mu.detach(), {"fit": fit.detach()}
