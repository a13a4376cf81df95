"""DDIM: unconditional sampling from the prior (y is ignored).

Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", arXiv 2010.02502, Eq. 12. The baseline
that shows a prior is sampled correctly: its samples should match the prior, not the posterior.
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
class DDIM(Solver):
    """DDIM on a VP path; eta = 0 deterministic (probability-flow), eta = 1 ancestral (DDPM)."""

    name = "ddim"
    description = "DDIM prior sampling, ignores y (Song et al. 2021)"

    steps: int = 100
    eta: float = 0.0
    path: str | None = None
    spacing: str = "uniform"

    def validate(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"ddim: eta must be in [0, 1], got {self.eta}")
        if self.path is not None:
            P.get_path(self.path)

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        path = solver_path(prior, self.path)
        ts = timesteps(path, self.steps, self.spacing)
        like = self.like(problem)
        x = start_state(path, ts[0], self.randn(gens, problem))  # x_T ~ N(0, I) in network units
        one, zero = torch.ones((), dtype=like.dtype), torch.zeros((), dtype=like.dtype)
        for i in self.iterate():
            a_t, s_t = path_coefs(path, ts[i], like)
            with torch.no_grad():
                x0 = prior.x0_at(x, ts[i].to(like.dtype), path)
            # The last move goes to the data end (alpha = 1, sigma = 0), which returns x0.
            a_s, s_s = path_coefs(path, ts[i + 1], like) if i + 1 < self.steps else (one, zero)
            noise = self.randn(gens, problem) if self.eta > 0 else None
            x = ddim_step(x, x0, a_t, s_t, a_s, s_s, self.eta, noise)
            self.guard(x, i, "steps")
        return x, {}
