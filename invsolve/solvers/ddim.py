"""DDIM: unconditional sampling from the prior (y is ignored).

Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", ICLR 2021, arXiv 2010.02502, Eq. 12 and
Eq. 16 (sigma_t(eta)). The baseline that shows a prior is sampled correctly: its samples should match
the prior, not the posterior.

Official code: github.com/ermongroup/ddim, ``functions/denoising.py`` (``generalized_steps``) and
``runners/diffusion.py`` (``sample_image``: ``skip_type`` "uniform", seq = range(0, N, N // n));
``tests/test_trace_ddim.py`` runs a transcription of that loop beside this solver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from invsolve import paths as P

from .base import Preset, Solver, ddim_step, path_coefs, solver_path, start_state
from .ode import PathStepper, check_method, stepper_nfe
from .registry import register
from .schedules import timesteps


@register
@dataclass
class DDIM(Solver):
    """DDIM on a VP path: x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z, with
    c = eta sigma_{t->s} (Eq. 16); eta = 0 is deterministic (the paper's DDIM), eta = 1 ancestral
    (DDPM's posterior variance). x0_hat is not clipped, as in ``generalized_steps``. The last step
    goes to alpha = 1, sigma = 0 and returns x0_hat. Defaults: 100 steps, eta = 0, the official
    "uniform" skip; ``preset="paper"`` is the official script's defaults (1000 steps).

    ``method`` (eta = 0 only): "euler" is DDIM's step, the first-order solver of the probability-flow
    ODE; "heun" (EDM's second-order correction, NFE = 2 steps - 1) and "dpm2m" (DPM-Solver++(2M),
    NFE = steps) are the second-order steps of ``invsolve.solvers.ode`` on the same grid.

    Deviation from the official code: ``range(0, N, N // n)`` holds more than n steps when n does
    not divide N (N = 1000, n = 7: 8 steps, the last at 994); invsolve keeps the first n of them
    (``schedules.respace``), so ``steps`` is the number of network calls. Step counts that divide N
    (10, 20, 50, 100, 1000, ...) visit exactly the official steps.
    """

    name = "ddim"
    description = "DDIM prior sampling, ignores y (Song et al. 2021)"
    presets: ClassVar[dict[str, dict[str, Preset]]] = {"paper": {"*": Preset(
        {"steps": 1000, "eta": 0.0, "spacing": "uniform"},
        "ermongroup/ddim: main.py (defaults --timesteps 1000, --eta 0.0, --skip_type uniform)",
        "the paper's tables sweep steps in {10, 20, 50, 100, 1000} and eta in {0, 0.2, 0.5, 1}")}}

    steps: int = 100
    eta: float = 0.0
    path: str | None = None
    spacing: str = "uniform"
    method: str = "euler"

    def validate(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"ddim: eta must be in [0, 1], got {self.eta}")
        check_method(self.method, "ddim")
        if self.method != "euler" and self.eta != 0:
            raise ValueError(f"ddim: method={self.method!r} integrates the deterministic ODE; use eta=0")
        if self.path is not None:
            P.get_path(self.path)

    def expected_nfe(self) -> int:
        return stepper_nfe(self.method, self.steps)

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        path = solver_path(prior, self.path)
        ts = timesteps(path, self.steps, self.spacing)
        like = self.like(problem)
        x = start_state(path, ts[0], self.randn(gens, problem))  # x_T ~ N(0, I) in network units
        one, zero = torch.ones((), dtype=like.dtype), torch.zeros((), dtype=like.dtype)
        stepper = None
        if self.method != "euler":  # the grid's alphas and sigmas, then the data end (1, 0)
            coefs = [path_coefs(path, t, like) for t in ts[: self.steps]] + [(one, zero)]
            stepper = PathStepper([a for a, _ in coefs], [s for _, s in coefs], self.method)

        def x0_fn(z: Tensor, j: int) -> Tensor:
            with torch.no_grad():
                return prior.x0_at(z, ts[j].to(like.dtype), path)

        for i in self.iterate():
            a_t, s_t = path_coefs(path, ts[i], like)
            with torch.no_grad():
                x0 = prior.x0_at(x, ts[i].to(like.dtype), path)
            if stepper is not None:
                x = stepper.step(i, x, x0, x0_fn)
            else:  # the last move goes to the data end (alpha = 1, sigma = 0), which returns x0
                a_s, s_s = path_coefs(path, ts[i + 1], like) if i + 1 < self.steps else (one, zero)
                noise = self.randn(gens, problem) if self.eta > 0 else None
                x = ddim_step(x, x0, a_t, s_t, a_s, s_s, self.eta, noise)
            self.guard(x, i, "steps")
        return x, {}
