"""PiGDM: pseudoinverse-guided diffusion models.

Song, Vahdat, Mardani & Kautz 2023, "Pseudoinverse-Guided Diffusion Models for Inverse Problems",
ICLR 2023. p(x0 | x_t) is approximated by N(x0_hat, r_t^2 I) (Eq. 5), so for a linear A with Gaussian
noise (Eq. 8)
    grad_{x_t} log p(y | x_t) ~= J^T A^T (r_t^2 A A^T + sigma_y^2 I)^-1 (y - A x0_hat),   J = d x0_hat / d x_t,
a vector-Jacobian product; for sigma_y = 0 it is r_t^-2 J^T A^+ (y - A x0_hat) (Eq. 7).
r_t^2 = sigma_t^2 v / (sigma_t^2 + v), sigma_t^2 = (1 - abar_t) / abar_t, is the posterior variance for
data of variance v (``data_var``; the paper's v = 1 for data in [-1, 1]).

The authors released no code; the implementation by the same group, NVlabs/RED-diff algos/pgdm.py
(``PGDM.sample`` with its configuration's awd = True), is the official form here. With
g = J^T A^+ (y - A x0_hat) (its ``mat``, the noiseless Eq. 7 without r_t^-2), each step is a DDIM step
(eta; ``c1``, ``c2``) of the unguided x0_hat and eps_hat, plus a push along g:
    x_s = sqrt(abar_s) x0_hat + c1 z + c2 eps_hat + w sqrt(abar_s abar_t) g,
from x_T = sqrt(abar_T) A^+ y + sqrt(1 - abar_T) z (its ``initialize``), on the time grid
range(0, N, N // steps) ending at abar = 1 (main.py ``get_timesteps``, ss = [-1] + ts[:-1]).

``form``:
- "tweedie" (default): the conditional score of Eq. 8 put into Tweedie's formula, x0_guided = x0_hat +
  w sigma_t^2 grad_{x_t/alpha_t} log p(y | x_t), followed by the DDIM step from (x_t, x0_guided): the
  exact conditional DDIM update for that likelihood, with no tuned weight (w = 1). It is pgdm.py's
  other branch (awd = False: the push is the DDIM step's derivative in x0, sqrt(abar_s) - c2
  sqrt(abar_t / (1 - abar_t)), times sqrt(abar_t) w g) with w = sigma_t^2 / r_t^2 = 1 / abar_t.
- "published": pgdm.py's update above (the trace test checks it call by call). For sigma_y > 0, g uses
  Eq. 8 times r_t^2, g = J^T r_t^2 A^T (r_t^2 A A^T + sigma_y^2 I)^-1 (y - A x0_hat), which is pgdm.py's
  A^+ form at sigma_y = 0 and continuous in sigma_y. The "paper" preset selects it.
Why "tweedie" is the default: on the Gaussian-mixture benchmark (exact posterior; sliced Wasserstein,
500 samples, 20 problems per cell, 100 steps, tweedie / published) d = 8: d_y = 1, 2, 4: 5.88 / 5.83,
2.93 / 5.93, 2.36 / 2.30; d = 80: 6.47 / 11.69, 4.04 / 11.20, 4.74 / 11.18 (the prior alone: 12.2,
12.7, 14.4). The published push sqrt(abar_s abar_t) g is tiny at high noise, where a mixture
component is chosen, so the published form follows the prior there. On images (natural-rgb prior, two 32 x 32 crops, PSNR in dB, tweedie / published at
sigma_y = 0, 0.01, 0.05, 100 steps) neither dominates: random inpainting (70%) 29.1 / 31.8, 28.4 / 31.2,
26.1 / 28.9; box inpainting 27.2 / 27.7, 26.6 / 27.3, 25.4 / 26.0; Gaussian blur 30.6 / 31.2, 25.6 /
24.1, 23.2 / 21.1; sr4 26.4 / 26.6, 26.1 / 26.5, 23.1 / 22.0. On single-coil MRI of a real image
(phantom-ct prior, 32 x 32 Shepp-Logan, 4x, sigma_y = 0.05, mean of 4 samples) the published form is far
ahead, 19.3 / 25.2 dB (zero filling 20.5; experiments/results/robustness/flagged.md).

Units: ``weight`` (pgdm.py's ``grad_term_weight``) is unitless and ``data_var`` is stated in the
network's units (v / data_scale^2 here); y and sigma_y are in the operator's units. A^+ is linear, so
the [-1, 1] code's g (from y_net = 2 y - A(1)) is data_scale times ours and its update, mapped back to
operator units, is ours: no other conversion is needed.

Deviations from the official code:
- ``form="tweedie"`` (default), for the reason above; ``form="published"`` restores pgdm.py's update.
- ``noise_aware=True`` (default): sigma_y enters g through Eq. 8 as above; pgdm.py ignores sigma_y and
  uses A^+ (y - A x0_hat) for noisy y too (``noise_aware=False`` restores it; the "paper" preset
  does).
- The pseudo-inverse zeroes singular values below ``floor`` times the largest (``linalg.pinv``,
  ``linalg.adjoint_gram_solve``): a floored direction is unobserved. pgdm.py's SVD classes zero them
  too (ZERO = 3e-2 per 1-D blur factor, 1e-3 for general matrices), but its H_pinv passes U^T v
  through undivided on those directions, where its own H x is 0: the two agree on measurements made
  with its zeroed H, and differ by at most the floored part of y (below 1e-3 of the largest singular
  value times x, plus noise) on measurements made with the exact operator.
- The time grid has exactly ``steps`` steps; for a ``steps`` that does not divide N, range(0, N,
  N // steps) has a few more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from invsolve import paths as P

from .base import Preset, Solver, ddim_step, path_coefs, path_coefs_host, solver_path
from .linalg import SVD_FLOOR, NormalSolver, pinv, require_gaussian, require_linear
from .registry import register
from .schedules import timesteps

FORMS = ("published", "tweedie")

_PGDM_SOURCE = ("NVlabs/RED-diff sample_test.sh (the pgdm commands: algo.awd=True algo.eta=1.0 "
                "exp.num_steps=100) and _configs/algo/pgdm.yaml (grad_term_weight: 1, awd: True)")


@register
@dataclass
class PiGDM(Solver):
    """PiGDM (Alg. 1) on a linear operator: 100 DDIM steps with eta = 1, guidance weight 1 (the
    paper's and RED-diff's settings); ``form="published"`` is pgdm.py's update (the "paper" preset),
    the default "tweedie" the exact conditional DDIM step (see the module docstring for why).
    NFE = steps (one network call and one VJP each).

    ``floor``: singular values below ``floor`` times the largest count as unobserved in A^+ and in the
    Gram solve, so that a noiseless deblurring does not divide by singular values near 1e-20.
    ``cg_tol`` / ``cg_max_iter``: operators without an SVD (CT, valid-padded blur) solve the Gram
    system by conjugate gradient on the normal equations, warm-started from the previous step, to
    this relative residual (``linalg.NormalSolver``; benchmarks/overhead.py has the cost and PSNR).
    With the shipped 32 x 32 natural-rgb prior, 20 steps beat 100 on deblurring and sr4 (sr4, sigma_y
    = 0: 30.1 against 26.6 dB; the old and both new forms alike), likely because that prior was trained
    on few noise levels below sigma ~ 0.05; 100 stays the default as the paper's setting.
    """

    name = "pigdm"
    description = "Pseudoinverse-guided diffusion (Song et al. 2023), linear operators"
    presets: ClassVar[dict[str, dict[str, Preset]]] = {"paper": {"*": Preset(
        {"steps": 100, "eta": 1.0, "weight": 1.0, "form": "published", "noise_aware": False}, _PGDM_SOURCE,
        "RED-diff's main.py adds noise of std 2 sigma_y to y in [-1, 1] units, i.e. its sigma_y is in "
        "[0, 1] units as ours; its pgdm.py then ignores sigma_y (noise_aware=False)")}}

    steps: int = 100
    eta: float = 1.0
    weight: float = 1.0
    data_var: float = 1.0
    form: str = "tweedie"
    noise_aware: bool = True
    path: str | None = None
    spacing: str = "uniform"
    floor: float = SVD_FLOOR
    cg_tol: float = 1e-3
    cg_max_iter: int = 50

    def validate(self) -> None:
        if self.cg_tol <= 0 or self.cg_max_iter < 1:
            raise ValueError("pigdm: cg_tol must be > 0 and cg_max_iter >= 1")
        if not 0 <= self.eta <= 1 or self.data_var <= 0 or self.weight < 0:
            raise ValueError("pigdm: eta must lie in [0, 1], data_var be > 0 and weight >= 0")
        if self.form not in FORMS:
            raise ValueError(f"pigdm: form must be one of {FORMS}, got {self.form!r}")
        if not 0 <= self.floor < 1:
            raise ValueError(f"pigdm: floor must lie in [0, 1), got {self.floor}")

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        op = require_linear(problem.operator, self.name)
        s2y = require_gaussian(problem, self.name) ** 2
        like = self.like(problem)
        path = solver_path(prior, self.path)
        ts = timesteps(path, self.steps, self.spacing)
        center = path.center if isinstance(path, P.ScaledPath) else 0.0
        data_var = self.data_var / prior.data_scale**2  # stated for the network's units
        one, zero = torch.ones((), dtype=like.dtype), torch.zeros((), dtype=like.dtype)
        gram = NormalSolver(op, self.floor, self.cg_tol, self.cg_max_iter)  # closed form if decomposable

        # pgdm.py's initialize: x_T = sqrt(abar_T) A^+ y + sqrt(1 - abar_T) z, A^+ taken in the network's
        # units, i.e. around the network's 0 (center) here.
        a_T, s_T = path_coefs(path, ts[0], like)
        ones = torch.ones((1, *problem.x_shape), dtype=like.dtype, device=like.device)
        x_pinv = center + pinv(op, problem.y - center * op.A(ones), self.floor) if center else pinv(
            op, problem.y, self.floor)
        x = a_T * x_pinv + s_T * self.randn(gens, problem)
        for i in self.iterate():
            t = ts[i].to(like.dtype)
            a_t, s_t = path_coefs(path, ts[i], like)
            a_s, s_s = path_coefs(path, ts[i + 1], like) if i + 1 < self.steps else (one, zero)
            a_h, s_h = path_coefs_host(path, ts[i])  # host floats: no device read-back per step
            sig2 = (s_h / a_h) ** 2  # canonical sigma_t^2
            r2 = sig2 * data_var / (sig2 + data_var)  # Eq. 5
            x = x.detach().requires_grad_(True)
            x0 = prior.x0_at(x, t, path)
            with torch.no_grad():  # r^2 A^T (r^2 A A^T + sigma_y^2 I)^-1 (y - A x0): A^+ (y - A x0) if noiseless
                v = r2 * gram(problem.y - op.A(x0), r2, s2y if self.noise_aware else 0.0)
            (g,) = torch.autograd.grad(x0, x, grad_outputs=v)  # the VJP: g = J^T v
            noise = self.randn(gens, problem) if self.eta > 0 else None
            with torch.no_grad():
                x0 = x0.detach()
                if self.form == "published":  # DDIM of the unguided x0, then the sqrt(abar_s abar_t) push
                    x = ddim_step(x, x0, a_t, s_t, a_s, s_s, self.eta, noise) + self.weight * a_s * a_t * g
                else:  # Tweedie with the conditional score: x0 + sigma^2 grad_{x/alpha} = x0 + sigma^2 alpha / r^2 g
                    x0g = x0 + self.weight * sig2 * a_t / r2 * g
                    x = ddim_step(x, x0g, a_t, s_t, a_s, s_s, self.eta, noise)
            self.guard(x, i, "weight", advice=self._advice())
        return x.detach(), {}

    def _advice(self) -> str:
        return (f"raise floor (now {self.floor:g}: singular values below it count as unobserved) or lower "
                f"weight (now {self.weight:g}); check that y is in the prior's units")
