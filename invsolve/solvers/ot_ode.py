"""OT-ODE: training-free linear inverse problems with conditional-OT flows.

Pokle, Muckley, Chen & Karrer 2023, "Training-free Linear Image Inverses via Flows", arXiv 2310.04432,
Sec. 3 and Algorithm 1, as implemented by Martin et al. 2025 (PnP-Flow, annegnx/PnP-Flow,
``pnpflow/methods/ot_ode.py``, class ``OT_ODE.solve_ip``), the reference the flow solvers here are
traced against. On the linear path with noise at t = 0, x_t = t x1 + (1 - t) x0 (x1 data, x0 noise,
network units), conditioning on y moves the data estimate x1_hat = x_t + (1 - t) v(x_t) by the PiGDM
likelihood score (Song et al. 2023, Eq. 8) with p(x1 | x_t) ~= N(x1_hat, r_t^2 I):
    g   = (d x1_hat / d x_t)^T A^T (r_t^2 A A^T + sigma_y^2 I)^-1 (y - A x1_hat),
    r_t^2 = v (1 - t)^2 / (v t^2 + (1 - t)^2)    (data of variance v; the paper: v = 1),
    x  <- x + dt (v(x_t) + gamma_t (1 - t) / t g),   gamma_t = 1 or sqrt(t / (t^2 + (1 - t)^2)),
Euler steps from t0 > 0, started at x_t0 = t0 A^T y + (1 - t0) eps.

Units: ``data_var`` is in the network's units (v = 1 for [-1, 1] images) and converted once with the
prior's ``data_scale``; sigma_y is the problem's own. The solver runs on the prior's own flow path when
it has one (the network is called at exactly the reference's times and inputs), otherwise on the
linear path in the prior's units (``flows.FlowFrame``).

Deviations from the official code (each with the option that restores it):
- Singular-value floor: the Gram solve treats singular values below ``floor`` x the largest as
  unobserved (``linalg.gram_solve``). The reference divides by r_t^2 s^2 + sigma_y^2, which for a
  noiseless blur reaches 1e-20 and diverges within a few steps; ``floor=0`` restores it.
- Start: the method's own Gaussian model of the data, N(c, v I), gives the posterior mean
  c + A^T (A A^T + sigma_y^2 / v I)^-1 (y - A c) (``init="wiener"``; the floored A^+ y when
  noiseless) instead of A^T y, which is far off scale for operators with ||A|| != 1 (CT: ||A||^2 ~
  4e3). The plain A^+ y (``init="pinv"``, the former default) amplifies the noise of a blur 1000-fold:
  7.6 dB on blur_gauss (9 x 9, std 2, 3 x 32 x 32) at sigma_y = 0.05 with the natural-rgb prior,
  against 17.9 dB from the default (18.7 dB from A^T y, which only suits operators with ||A|| ~ 1). ``init="adjoint"`` restores the reference's start. All are taken about the
  network's 0 (c, the operator-unit value it sees as 0), which is what the reference's A^T y computes
  in [-1, 1] units (``flows.back_projection``).
- Time grid: all ``steps`` Euler steps on [t0, 1] (dt = (1 - t0) / steps); the reference runs N steps
  of 1 / N on [0, 1] and skips the first int(N t0) of them; ``grid="skip"`` restores it (then
  NFE = steps - int(steps t0)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .base import Preset, Solver
from .flows import FlowFrame, back_projection
from .linalg import SVD_FLOOR, NormalSolver, gram_solve, require_gaussian, require_linear
from .ode import PathStepper, check_method, stepper_nfe
from .registry import register

_SRC = "annegnx/PnP-Flow scripts/script_test.sh (ot_ode lines), config/method_config/ot_ode.yaml"
_NOTE = ("celebA 128 x 128 in [-1, 1]: the paper's sigma_y 0.05 is 0.025 for [0, 1] images (random "
         "inpainting 0.01 -> 0.005, denoising 0.2 -> 0.1); SR there keeps one pixel per block (sr*_pool "
         "is the nearest operator here)")


def _paper(t0: float, gamma: str) -> Preset:
    return Preset({"steps": 100, "t0": t0, "gamma": gamma, "grid": "skip", "init": "adjoint"}, _SRC, _NOTE)


@register
@dataclass
class OTODE(Solver):
    """OT-ODE (Alg. 1): Euler steps of the conditional velocity, one network call (and one VJP) each.
    NFE = steps (``grid="t0"``) or steps - int(steps t0) (``grid="skip"``).

    Defaults: t0 = 0.2 and gamma "constant" (the reference's method config), data variance 1 in the
    network's units, singular-value floor 1e-3, the Gaussian posterior-mean start (A^+ y if noiseless). gamma "sqrt" is the paper's
    gamma_t = sqrt(t / (t^2 + (1 - t)^2)) ("gamma_t" in the reference).

    ``method``: "euler" (Alg. 1), or a second-order step of ``invsolve.solvers.ode`` on the same
    grid with the guided data estimate x1_hat + gamma s^2 / t g as the ODE's data prediction:
    "heun" (EDM's correction: NFE = 2 steps - 1) or "dpm2m" (DPM-Solver++(2M): NFE = steps).
    Euler on the linear path is the first-order step of both. ``cg_tol`` / ``cg_max_iter``: the
    Gram solve of operators without an SVD (CT, valid-padded blur) is conjugate gradient on the
    normal equations, warm-started from the previous step (``linalg.NormalSolver``).
    """

    name = "ot_ode"
    description = "Conditional-OT ODE with PiGDM correction (Pokle et al. 2023), linear operators"
    presets: ClassVar[dict[str, dict[str, Preset]]] = {"paper": {
        "denoise": _paper(0.3, "sqrt"),
        "blur_gauss": _paper(0.4, "sqrt"),
        "sr2": _paper(0.1, "constant"), "sr4": _paper(0.1, "constant"),
        "sr2_pool": _paper(0.1, "constant"), "sr4_pool": _paper(0.1, "constant"),
        "inpaint_box": _paper(0.1, "sqrt"),
        "inpaint_freeform": _paper(0.1, "sqrt"),
        "inpaint_random": _paper(0.1, "constant"),
    }}

    steps: int = 100
    t0: float = 0.2
    gamma: str = "constant"
    data_var: float = 1.0
    init: str = "wiener"
    grid: str = "t0"
    floor: float = SVD_FLOOR
    method: str = "euler"
    cg_tol: float = 1e-3
    cg_max_iter: int = 50

    def validate(self) -> None:
        check_method(self.method, "ot_ode")
        if self.cg_tol <= 0 or self.cg_max_iter < 1:
            raise ValueError("ot_ode: cg_tol must be > 0 and cg_max_iter >= 1")
        if not 0 < self.t0 < 1:
            raise ValueError(f"ot_ode: t0 must lie in (0, 1), got {self.t0}")
        if self.gamma not in ("constant", "sqrt"):
            raise ValueError(f"ot_ode: gamma must be 'constant' or 'sqrt', got {self.gamma!r}")
        if self.init not in ("wiener", "pinv", "adjoint") or self.data_var <= 0:
            raise ValueError("ot_ode: init must be 'wiener', 'pinv' or 'adjoint' and data_var > 0")
        if self.grid not in ("t0", "skip"):
            raise ValueError(f"ot_ode: grid must be 't0' or 'skip', got {self.grid!r}")
        if self.grid == "skip" and int(self.steps * self.t0) == 0:
            raise ValueError(f"ot_ode: grid='skip' with steps={self.steps} and t0={self.t0} starts at "
                             "t = 0, where the correction (1 - t) / t is infinite; raise steps or t0")
        if not 0 <= self.floor < 1:
            raise ValueError(f"ot_ode: floor must lie in [0, 1), got {self.floor}")

    def times(self) -> tuple[list[float], float]:
        """The Euler times t_i and the step dt (the reference's: t_k = k / N, k >= int(N t0))."""
        if self.grid == "skip":
            dt = 1 / self.steps
            return [dt * k for k in range(int(self.steps * self.t0), self.steps)], dt
        dt = (1 - self.t0) / self.steps
        return [self.t0 + i * dt for i in range(self.steps)], dt

    def expected_nfe(self) -> int:
        return stepper_nfe(self.method, len(self.times()[0]))

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        op = require_linear(problem.operator, self.name)
        s2y = require_gaussian(problem, self.name) ** 2
        like = self.like(problem)
        frame = FlowFrame(prior, noise_at_zero=True)  # the paper's convention: noise at t = 0, data at 1
        times, dt = self.times()
        times = [frame.clamp(t) for t in times]
        data_var = self.data_var / prior.data_scale**2  # stated for the network's units
        with torch.no_grad():  # Alg. 1, l. 1: x_t0 = t0 A^T y + (1 - t0) eps, about the network's 0
            x_init = back_projection(problem, self.init, frame.center, data_var, self.floor).to(like.dtype)
            t = times[0]
            x = t * x_init + frame.noise_std(t) * self.randn(gens, problem)
        solve = NormalSolver(op, self.floor, self.cg_tol, self.cg_max_iter)  # warm-started CG if no SVD

        def conditional(x: Tensor, t: float) -> tuple[Tensor, Tensor]:
            """(velocity, data estimate) given y at (x, t), both moved by the PiGDM score g."""
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():  # also when called for Heun's corrector inside no_grad
                vel, x1 = frame.velocity(prior, x, t)  # x1_hat = x + (1 - t) v: the Tweedie estimate
            s2 = frame.noise_std(t) ** 2  # Var of the noise in x_t, operator units
            r2 = data_var * s2 / (t**2 * data_var + s2)  # Var[x1 | x_t] for N(0, v I) data (Sec. 3.2)
            with torch.no_grad():  # A^T (r_t^2 A A^T + sigma_y^2 I)^-1 (y - A x1_hat), floored
                r = problem.y - op.A(x1)
                w = op.A_adjoint(gram_solve(op, r, r2, s2y, floor=self.floor)) if solve.decomposable \
                    else solve(r, r2, s2y)
            (g,) = torch.autograd.grad(x1, x, grad_outputs=w)  # the VJP: grad log p(y | x_t)
            gam = 1.0 if self.gamma == "constant" else math.sqrt(t / (t**2 + (1 - t) ** 2))
            # Tweedie: the score g moves x1_hat by s^2 / t g, so v = (x1_hat - x) / (1 - t) by
            # s^2 / (t (1 - t)) g; in network units (s = 1 - t) the paper's (1 - t) / t g.
            with torch.no_grad():
                return vel + gam * s2 / (t * (1 - t)) * g, x1.detach() + gam * s2 / t * g

        # Higher-order steps (``invsolve.solvers.ode``) on the same grid, ending at the data (t = 1).
        grid = times + [1.0]
        stepper = None if self.method == "euler" else PathStepper(
            [frame.data_weight(t) for t in grid], [frame.noise_std(t) for t in grid], self.method)
        for i, t in enumerate(times):
            vel, x1 = conditional(x, t)
            with torch.no_grad():
                if stepper is None:
                    x = x + dt * vel  # Alg. 1's Euler step
                else:
                    x = stepper.step(i, x, x1, lambda z, j: conditional(z, grid[j])[1])
            self.guard(x, i, "t0")
        return x.detach(), {}
