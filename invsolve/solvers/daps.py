"""DAPS: decoupled annealing posterior sampling.

Zhang, Chu, Berner, Meng, Anandkumar & Song 2024, "Improving Diffusion Inverse Problem Solving
with Decoupled Noise Annealing", arXiv 2407.01521, Algorithm 1; official code
zhangbingliang2019/DAPS (``sampler.py`` ``DAPS.sample``, ``cores/scheduler.py``,
``cores/mcmc.py``). For each annealing level sigma_i, i = 0..N-1:

1. x0_hat(x_t): Euler steps of the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma
   from sigma_i down to ``ode_sigma_min`` on a poly-7 grid of ``ode_steps`` + 1 levels (Sec. 3.3;
   official ``DiffusionPFODE.sample`` on ``get_diffusion_scheduler("edm", num_steps=5,
   sigma_max=sigma_i, sigma_min=0.01)``, torchdiffeq's fixed-grid Euler). The ODE's last state is
   x0_hat (no final denoising call). ``ode_method`` "heun" / "dpm2m" (an addition of this project,
   ``invsolve.solvers.ode``) integrate the same ODE on the same grid at second order: Heun with
   2 x ode_steps calls per level (the grid ends at ode_sigma_min, not at 0, so every step has its
   corrector), DPM-Solver++(2M) with ode_steps calls, as Euler. They are more accurate ODE solvers
   (order 2, tests/test_ode.py) but not better DAPS: benchmarks/quality_vs_nfe.py (4 crops 32 x 32,
   sigma_y 0.02, 5 ODE steps per level), PSNR at 100 / 1000 NFE, Euler / dpm2m / heun: SR x4 21.5 /
   20.0 / 18.4 and 23.5 / 19.4 / 19.9; box inpainting 26.5 / 26.1 / 23.8 and 27.8 / 28.0 / 27.0;
   Gaussian blur 26.9 / 25.7 / 18.9 and 27.6 / 28.3 / 27.6; below 50 NFE (fewer than 10 levels, the
   first ODE spanning sigma 50 to 0.005 in 5 steps) the second-order steps fall far behind (blur at 10
   NFE: 7.5 / 5.9 dB against 22.9). Euler stays the default.
2. ``mcmc_steps`` Langevin steps on p(x0 | x_t, y) ~ N(x0; x0_hat, sigma_i^2 I) p(y | x0)
   (Eq. 9-10) from x0_hat: x0 += lr_i (-grad data(x0) + (x0_hat - x0) / sigma_i^2) + sqrt(2 lr_i)
   eps (official ``MCMCSampler.sample``, ``prior_solver="gaussian"``, ``mc_algo="langevin"``), with
   lr_i = lr (1 + i / (N + 1) (lr_min_ratio - 1)) (official ``get_lr(step / num_steps)``; the
   scheduler's ``num_steps`` is N + 1).
3. Re-noise: x_{t_{i+1}} = x0 + sigma_{i+1} eps.

Levels (official ``EDMScheduler`` and ``Scheduler.discretize``): the poly-7 (EDM, rho = 7) grid of
N + 1 levels from ``sigma_max`` to ``sigma_min`` without its last point, then sigma = 0: the N
levels visited are the first N of that grid (sigma_min itself never is), and the result is the
Langevin output x0 of the last level (the official code adds 0 * eps to it). Chains start at
x_T = sigma_max eps in network units (``data_center + sigma eps`` in ours). Defaults are DAPS-1K of
the official code (``configs/sampler/edm_daps.yaml``, ``commands/pixel_ffhq.sh``): N = 200 levels
from 100 to 0.1, 5 ODE steps (1000 NFE), 100 Langevin steps; the step rule and likelihood are
this project's defaults, the official ones via the presets (below).

Units. The official code works on [-1, 1] images (a DDPM network behind EDM's ``VPPrecond``;
``priors.hub.from_guided_diffusion(net, schedule="vp_linear")`` is that conversion). Noise levels
and step sizes are given in those network units and converted once with the prior's
``data_scale`` s (network units per operator unit: 2 for [-1, 1] networks on [0, 1] images, 1 for
the analytic mixture): sigma / s, tau / y_scale (y_scale = s unless set), lr / s^2 (step="fixed").

Likelihood (``likelihood``):
- "problem" (default): the problem's own negative log-likelihood ``problem.misfit`` (Gaussian:
  ||y - A x||^2 / (2 sigma_y^2); Poisson: its NLL), so the data term follows the measurement's
  noise. ``tau`` (network units) replaces sigma_y: ||y - A x||^2 / (2 tau^2); noiseless problems
  use tau = 0.01.
- "paper": the official data term, ||A(x) - y||^2 / tau^2 summed over the measurement per sample,
  without a 1/2 (official ``Operator.loss`` / ``gradient``, ``MCMCSampler.score_fn``), tau = 0.01
  whatever sigma_y. The official measurements of the linear tasks, HDR and nonlinear blur are in
  [-1, 1] units (y_net = s y + const for a linear A), so tau / s is the same weight in ours; the
  official phase retrieval maps x to [0, 1] before the FFT, so its magnitudes are ours and its
  preset sets ``y_scale = 1``.

Step size (``step``):
- "lipschitz" (default; an addition of this project): lr_i = lr (a fraction, 0.05) times the
  get_lr factor (the paper's decay to lr_min_ratio 0.01 unless set), over L_i = 1 / sigma_i^2 + (data curvature),
  the curvature of the Langevin target, per sample: 2 ||A||^2 / tau^2 for "paper", ||A||^2 /
  sigma_y^2 for "problem". ||A||^2 comes from a power iteration on A^T A for linear operators
  (once); for nonlinear ones ||J_A(x0_hat)||^2 from warm-started power iterations on J^T J at every
  level (Gauss-Newton curvature; J v by central differences, J^T u by autograd). Stable at any
  sigma_y, operator norm and data scale; the update is the paper's, only its size differs. Needs a
  Gaussian data term. Ill-conditioned operators (CT) still mix slowly along small singular values.
- "fixed": the paper's absolute lr (network units; 1e-4 unless set, per-task values in the
  presets; lr_min_ratio 0.01 unless set). Stable only while lr_i < 2 / L_i, so one lr cannot serve
  every sigma_y and operator.

Why these defaults (measured for issue 11). Mixture benchmark, d = 6, d_y in {1, 2, 4}, 3 problems
each, 1000 chains, DAPS-1K, SW / prior-SW (mean; range): the former default (fixed lr 1e-4 with
the problem's likelihood) 0.92 (0.76-1.09; NaN at sigma_y = 0.002), i.e. the measurement is left
out; the lipschitz step 0.36 (0.014-0.84), with or without the lr decay (0.358 / 0.359); the
official form (fixed lr, tau = 0.01) 0.40, stable there only because ||A|| <= 1 (lr 2 ||A||^2 /
tau^2 <= 2). Noiseless (tau = 0.01), the decay leaves residuals of 3-9 tau (rms 0.028-0.088) where
no decay gives the Langevin equilibrium 1.15 tau and equal or lower SW. Default CT operator
(ct_sparse 128 x 128, 30 views, ||A||^2 = 3.7e3; phantom-ct prior, Shepp-Logan, 20 levels x 1 ODE
step): the former default diverges at the first level for sigma_y <= 0.3 (stable iff sigma_y >
0.43), the official form at every sigma_y, the fixed lr 1e-4 (network units) with the problem's
likelihood for sigma_y <= 0.1; the lipschitz step runs at every sigma_y: 20.1 / 24.9 / 25.1 /
25.1 dB at sigma_y = 1 / 0.1 / 0.01 / 0 (FBP: 18.5 at 1, 23.5 at 0.01; with the lr decay the
lipschitz step stays at 20.1-20.9 dB).
Those figures were taken with the fraction 0.5 and no decay. On images that setting fails: shipped
natural-rgb prior, SR x4 on 2 crops 32 x 32 of the held-out photo, sigma_y = 0.01, 50 levels x 5 ODE
steps x 100 Langevin steps: 15.2 dB PSNR (17.7 with the decay), against 25.6 for the fraction 0.05
with the decay, 25.9 for the fixed lr 1e-4 and 27.0 for the "paper" preset; the robustness matrix
put the former default 1-12 dB below A^+ y on SR, deblurring and CT. On the mixture the new default
is within ~10 % of the old (d = 8 / 80, d_y 1-4, 5 problems, 100 levels, SW: 8.13 / 10.17 / 0.49 /
12.15 / 10.05 old, 8.52 / 9.84 / 0.55 / 12.61 / 11.22 new). Noiseless problems end with the
projection onto {A x = y} (``noiseless_projection``), so the decay's residual there no longer shows.

Chain start (``chain_start``; an addition of this project). The official chain starts each level at
x0_hat. Default "auto": where the operator is linear and the data term Gaussian, the chain starts at
the mean of the level's target, N(x0; x0_hat, sigma_i^2 I) N(y; A x0, v I) (``linalg.gaussian_update``:
closed form for decomposable operators, conjugate gradient otherwise; one solve per level), and at
x0_hat otherwise; "x0_hat" is the paper's (the presets set it), "mean" insists on the mean. The target
and the Langevin update are unchanged, only where the chain begins. Why: the step is set by the
stiffest direction (||A||^2 / sigma_y^2), so in 100 steps the chain hardly moves along the weaker
singular directions of an ill-conditioned operator, which keep x0_hat's values and never see y.
Measured (robustness setup: 32 x 32, shipped priors, default settings, one sample; x0_hat start in
brackets): sparse-view CT on Shepp-Logan 35.9 [18.5] dB at sigma_y 0.01 and 33.1 [18.5] at 0.05 (A^+ y
34.8 / 28.4); MRI 4x at 0.05 22.8 [19.7] (zero-filled 20.5); photos, 2 crops, sigma_y 0.05: SR x4 17.9
[17.6], random inpainting 25.2 [24.4], box 25.5 [24.9], Gaussian blur 24.3 [25.2]; mixture d = 6
(tests/test_solvers.py): SW / prior-SW 0.05 [0.20].

Presets: "paper" = DAPS-1K with the official per-task (pixel) Langevin settings of
``configs/task/*.yaml``; "paper-4k" = DAPS-4K, 400 levels x 10 ODE steps (4000 NFE), the paper's
setting for its nonlinear tasks (the repository's commands run DAPS-1K only).

Deviations from the official code (each restorable, or without effect on the result):
- Default step="lipschitz", likelihood="problem" and chain_start="auto"; ``step="fixed",
  likelihood="paper", chain_start="x0_hat"`` (the presets) is the official update, pinned by
  tests/test_trace_daps.py.
- When a level's Langevin output turns NaN the official sampler replaces it by zeros and goes on;
  here the solver raises FloatingPointError naming ``lr`` (no silent garbage).
- The official schedules are computed in float32 (``Scheduler.tensorize``); here in float64.
- The top level is lowered to the prior's largest noise level when the prior's range ends below
  sigma_max (EDM's VE networks stop at 80); the official DDPM through ``VPPrecond`` reaches ~152,
  so nothing changes there. The ODE integrates to min(ode_sigma_min, sigma_i), never upwards.
- Langevin noise comes from each sample's own generator, several steps per draw (the distribution
  of the official per-step ``randn_like``; batch-independent).
Option ``mcmc="exact"`` (linear operator, Gaussian data term): step 2 draws x0 from
N(x0; x0_hat, sigma_i^2 I) N(y; A x0, v I) exactly (perturb-then-solve, ``DAPS.exact_step``), the
distribution the Langevin chain approximates, in one draw instead of ``mcmc_steps`` gradient steps;
the last level returns that Gaussian's mean. Measured on sparse-view CT (Shepp-Logan 32 x 32, default
operator, 1000 NFE): 34.7 / 31.9 dB at sigma_y 0.01 / 0.05 where the Langevin chain started at x0_hat
gives 17.7 / 17.7 (see chain_start above; the default now starts at the mean). On photos it is worse
(inpainting, SR: 16-19 dB): with r = sigma_i every direction y does not see gets noise of std sigma_i
at each level, far more than the Langevin chain, started at x0_hat, adds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from invsolve.paths import bcast
from invsolve.rng import randn

from .base import Preset, Solver, karras_sigmas
from .linalg import gaussian_update, operator_norm2
from .ode import PathStepper, check_method, stepper_nfe
from .registry import register

_REPO = "zhangbingliang2019/DAPS"
_SAMPLER = f"{_REPO} configs/sampler/edm_daps.yaml + commands/pixel_ffhq.sh"
_NOISE = ("the official sigma_y = 0.05 is in [-1, 1] units: 0.025 for [0, 1] images. lr, tau, "
          "sigma_max, sigma_min in network units, converted with the prior's data_scale")
# our task -> (official configs/task file, Langevin lr of its "pixel" section). Every pixel
# section has 100 Langevin steps, tau 0.01 and lr_min_ratio 0.01, except nonlinear_blur (200
# steps, lr 1e-5), an operator invsolve does not have.
_TASKS = {
    "sr4": ("down_sampling", 1e-4),
    "blur_gauss": ("gaussian_blur", 1e-4),
    "blur_motion": ("motion_blur", 5e-5),
    "inpaint_box": ("inpainting", 5e-5),
    "inpaint_random": ("inpainting_rand", 1e-4),
    "phase_retrieval": ("phase_retrieval", 5e-5),
    "hdr": ("hdr", 2e-5),
}


def _paper_presets(steps: int, ode_steps: int, what: str) -> dict[str, Preset]:
    table = {}
    for task, (config, lr) in _TASKS.items():
        values = {"steps": steps, "ode_steps": ode_steps, "mcmc_steps": 100, "lr": lr,
                  "lr_min_ratio": 0.01, "tau": 0.01, "sigma_max": 100.0, "sigma_min": 0.1,
                  "ode_sigma_min": 0.01, "step": "fixed", "likelihood": "paper",
                  "chain_start": "x0_hat"}
        note = f"{what}; {_NOISE}"
        if task == "phase_retrieval":
            # the official operator measures |F((x_net + 1) / 2)|: its y and tau are in our units
            values["y_scale"] = 1.0
            note = (f"{what}; the official phase retrieval measures [0, 1] images (y_scale = 1: "
                    "tau and sigma_y = 0.05 as they are); lr, sigma_max, sigma_min in network "
                    "units")
        source = f"{_REPO} configs/task/{config}.yaml (pixel) + {_SAMPLER}"
        table[task] = Preset(values, source, note)
    return table


@register
@dataclass
class DAPS(Solver):
    """DAPS with Langevin MCMC (Alg. 1). ``steps``: annealing levels N. ``lr``: the Langevin step, a
    fraction of 1 / L under step="lipschitz" (default 0.05), the paper's absolute lr in network
    units under step="fixed" (default 1e-4). ``sigma_max``, ``sigma_min``, ``ode_sigma_min`` and
    ``tau`` are in network units. See the module docstring for likelihood, step, chain_start and
    y_scale."""

    name = "daps"
    description = "Decoupled annealing posterior sampling, Langevin core (Zhang et al. 2024)"
    presets: ClassVar[dict[str, dict[str, Preset]]] = {
        "paper": _paper_presets(200, 5, "DAPS-1K (200 levels x 5 ODE steps)"),
        "paper-4k": _paper_presets(400, 10, "DAPS-4K (400 levels x 10 ODE steps, arXiv 2407.01521; "
                                            "not in the repository's commands)"),
    }

    key_neutral: ClassVar[dict[str, object]] = {"ode_method": "euler"}

    steps: int = 200
    ode_steps: int = 5
    mcmc_steps: int = 100
    lr: float | None = None
    lr_min_ratio: float | None = None
    sigma_max: float = 100.0
    sigma_min: float = 0.1
    ode_sigma_min: float = 0.01
    tau: float | None = None
    likelihood: str = "problem"
    step: str = "lipschitz"
    y_scale: float | None = None
    mcmc: str = "langevin"
    chain_start: str = "auto"
    ode_method: str = "euler"

    #: lr when not set: a fraction of 1 / L ("lipschitz"); the paper's absolute lr ("fixed")
    DEFAULT_LR: ClassVar[dict[str, float]] = {"lipschitz": 0.05, "fixed": 1e-4}
    MEAN_TOL: ClassVar[float] = 1e-4
    """Relative residual of the chain start's conjugate gradient (operators without an SVD): on 64 x 64
    sparse-view CT (50 levels) about 50 iterations per level from the previous level's mean (2 483 in all),
    against 184 cold at 1e-6, for the same PSNR (26.49 / 26.48 dB); the Langevin chain starts there, it
    is not the answer."""
    #: lr_min_ratio when not set: the paper's decay to 0.01 under both steps (see the module
    #: docstring for why the lipschitz fraction is 0.05 with the decay)
    DEFAULT_LR_MIN_RATIO: ClassVar[dict[str, float]] = {"lipschitz": 0.01, "fixed": 0.01}

    def validate(self) -> None:
        if self.ode_steps < 1 or self.mcmc_steps < 0:
            raise ValueError("daps: ode_steps must be >= 1 and mcmc_steps >= 0")
        check_method(self.ode_method, "daps (ode_method)")
        if self.mcmc not in ("exact", "langevin"):
            raise ValueError(f"daps: mcmc must be 'langevin' (the paper's) or 'exact', "
                             f"got {self.mcmc!r}")
        if self.chain_start not in ("auto", "x0_hat", "mean"):
            raise ValueError(f"daps: chain_start must be 'auto', 'mean' or 'x0_hat' (the paper's), "
                             f"got {self.chain_start!r}")
        if self.step not in ("fixed", "lipschitz"):
            raise ValueError(f"daps: step must be 'lipschitz' or 'fixed' (the paper's), "
                             f"got {self.step!r}")
        if self.likelihood not in ("problem", "paper"):
            raise ValueError(f"daps: likelihood must be 'problem' or 'paper' (the official "
                             f"||A(x) - y||^2 / tau^2), got {self.likelihood!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"daps: lr must be > 0, got {self.lr}")
        if self.lr_min_ratio is not None and not self.lr_min_ratio > 0:
            raise ValueError(f"daps: lr_min_ratio must be > 0, got {self.lr_min_ratio}")
        if self.step == "lipschitz" and self.lr is not None:
            if not self.lr < 2:
                raise ValueError(f"daps: with step='lipschitz' lr is a fraction of 1 / L and must "
                                 f"be < 2, got {self.lr}")
            if self.lr < 1e-2:
                warnings.warn(f"daps: lr={self.lr:g} is a fraction of 1 / L under step='lipschitz' "
                              "(the default); for the paper's absolute step set step='fixed'",
                              stacklevel=4)
        if not 0 < self.sigma_min < self.sigma_max or not self.ode_sigma_min > 0:
            raise ValueError("daps: need 0 < sigma_min < sigma_max and ode_sigma_min > 0")
        if self.tau is not None and not self.tau > 0:
            raise ValueError(f"daps: tau must be > 0, got {self.tau}")
        if self.y_scale is not None and not self.y_scale > 0:
            raise ValueError(f"daps: y_scale must be > 0, got {self.y_scale}")

    def expected_nfe(self) -> int:
        return self.steps * stepper_nfe(self.ode_method, self.ode_steps, ends_at_data=False)

    # --- schedule --------------------------------------------------------------------------------
    def levels(self, prior) -> list[float]:
        """The N annealing levels in operator units: the first N of the poly-7 grid of N + 1 levels
        from sigma_max to sigma_min (official ``EDMScheduler``), the top lowered to the prior's
        largest noise level if that is smaller."""
        scale = float(prior.data_scale)
        top, low = self.sigma_max / scale, self.sigma_min / scale
        rng = getattr(prior, "sigma_range", None)
        if rng is not None and rng[1] < top:
            top = max(float(rng[1]), low * (1 + 1e-9))
        return karras_sigmas(self.steps + 1, low, top)[: self.steps].tolist()

    def lr_factor(self, i: int) -> float:
        """The official ``get_lr`` multiplier at level i: 1 + i / (N + 1) (lr_min_ratio - 1)."""
        ratio = self.lr_min_ratio
        if ratio is None:
            ratio = self.DEFAULT_LR_MIN_RATIO[self.step]
        return 1 + (i / (self.steps + 1)) * (ratio - 1)

    # --- data term -------------------------------------------------------------------------------
    def data_term(self, problem, prior):
        """(loss, weight, hess): the Langevin data gradient is weight * grad sum(loss(x)) with loss
        per sample, and weight * hess * ||J||^2 its curvature (hess None when not Gaussian)."""
        y_scale = float(self.y_scale if self.y_scale is not None else prior.data_scale)
        if self.likelihood == "paper":
            tau = (0.01 if self.tau is None else self.tau) / y_scale

            def loss(x: Tensor) -> Tensor:  # official Operator.loss: no 1/2, summed per sample
                return problem.residual(x).abs().pow(2).reshape(x.shape[0], -1).sum(1)

            return loss, 1 / tau**2, 2.0
        sigma = problem.noise_sigma
        if sigma is None:
            if self.tau is not None:
                raise ValueError("daps: tau sets a Gaussian noise std but the problem's noise is "
                                 "not Gaussian; use likelihood='paper' for the official squared "
                                 "residual")
            return problem.misfit, 1.0, None
        var = sigma**2 if sigma > 0 else 1.0  # what problem.misfit divides by (twice)
        if self.tau is None and sigma > 0:
            return problem.misfit, 1.0, 1 / var
        tau = (0.01 if self.tau is None else self.tau) / y_scale
        return problem.misfit, var / tau**2, 1 / var  # = ||y - A x||^2 / (2 tau^2)

    @staticmethod
    def data_grad(problem, loss, hess: float | None):
        """x -> grad of sum(loss(x)). A linear operator with a Gaussian data term in closed form,
        hess * Re A^T (A x - y) (``data_term``'s hess is the loss's curvature per unit of A^T A): the
        same gradient without building an autograd graph at each of the mcmc_steps Langevin steps;
        autograd through the operator otherwise."""
        from deepinv.physics import LinearPhysics

        op = problem.operator
        if hess is not None and isinstance(op, LinearPhysics):
            return lambda x: hess * op.A_adjoint(op.A(x) - problem.y).real.to(x.dtype)

        def autograd(x: Tensor) -> Tensor:
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(loss(x).sum(), x)
            return g

        return autograd

    @staticmethod
    def _jacobian_norm2(problem, x: Tensor, v: Tensor, iters: int) -> tuple[Tensor, Tensor]:
        """Per-sample ||J_A(x)||^2 of a nonlinear operator and the next power-iteration vector, by
        ``iters`` power iterations on J^T J from ``v``: J v by central differences (works through
        custom autograd Functions such as the PDE solvers'), J^T u by autograd. A fixed number of
        iterations, so a sample's estimate does not depend on the rest of the batch."""
        op = problem.operator
        dims = tuple(range(1, x.ndim))
        x = x.detach()
        h = 1e-3 * (x.pow(2).mean(dims).sqrt() + 1e-3)  # per-sample difference step (unit v)
        norm2 = x.new_zeros(x.shape[0])
        for _ in range(iters):
            v = v / v.pow(2).sum(dims, keepdim=True).sqrt().clamp_min(1e-300)
            with torch.no_grad():
                diff = op.A(x + bcast(h, x) * v) - op.A(x - bcast(h, x) * v)
                jv = diff / bcast(2 * h, diff)
            xg = x.clone().requires_grad_(True)
            (jtjv,) = torch.autograd.grad(op.A(xg), xg, grad_outputs=jv)
            norm2, v = jv.abs().pow(2).reshape(x.shape[0], -1).sum(1), jtjv.detach().real
        return norm2, v

    def _curvature_setup(self, problem, hess) -> tuple[bool, Tensor | None, Tensor | None]:
        """(linear, ||A||^2 or None, power-iteration start for nonlinear operators)."""
        from deepinv.physics import LinearPhysics

        if self.step != "lipschitz":
            return True, None, None
        if hess is None:
            raise ValueError("daps: step='lipschitz' needs a Gaussian data term and the problem's "
                             "noise is not Gaussian; use likelihood='paper' (the official squared "
                             "residual) or step='fixed' with the paper's lr (network units)")
        if isinstance(problem.operator, LinearPhysics):
            norm2 = operator_norm2(problem.operator, problem.x_shape, problem.y.real, len(problem))
            return True, norm2, None
        dtype = problem.y.real.dtype
        v = torch.randn(problem.x_shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
        return False, None, v.to(problem.y.device).expand(len(problem), *problem.x_shape).clone()

    # --- the algorithm ---------------------------------------------------------------------------
    def ode_x0(self, prior, x: Tensor, sigma: float, floor: float) -> Tensor:
        """x0_hat(x_t): ``ode_method`` steps of dx/dsigma = (x - D(x, sigma)) / sigma on the poly-7 grid
        of ode_steps + 1 levels from sigma to min(floor, sigma) (operator units); Euler is the paper's."""
        sig = karras_sigmas(self.ode_steps + 1, min(floor, sigma), sigma).tolist()
        # the grid as a variance-exploding path (alpha = 1): PathStepper's Euler step is the paper's
        # x + (sigma' - sigma) (x - D) / sigma; a level at the floor has a flat grid, where the
        # multistep's log-sigma ratio is undefined and every step is 0 (Euler)
        method = self.ode_method if sig[0] > sig[-1] else "euler"
        stepper = PathStepper([1.0] * len(sig), sig, method)

        def data(z: Tensor, j: int) -> Tensor:
            return self.denoise_at(prior, z, sig[j])

        for j in range(self.ode_steps):
            x = stepper.step(j, x, data(x, j), data)
        return x

    def exact_variance(self, problem, prior) -> float | None:
        """The data variance v of the Gaussian likelihood N(y; A x0, v I) when step 2 can be
        sampled exactly (a linear operator and a Gaussian data term), else None: sigma_y^2 for
        likelihood="problem" (tau^2 when tau is set; 0 when noiseless), tau^2 / 2 for "paper"
        (its ||A x - y||^2 / tau^2 has no 1/2), tau in y units (tau / y_scale)."""
        from deepinv.physics import LinearPhysics

        if not isinstance(problem.operator, LinearPhysics):
            return None
        y_scale = float(self.y_scale if self.y_scale is not None else prior.data_scale)
        if self.likelihood == "paper":
            return ((0.01 if self.tau is None else self.tau) / y_scale) ** 2 / 2
        if problem.noise_sigma is None:
            return None
        if self.tau is not None:
            return (self.tau / y_scale) ** 2
        return float(problem.noise_sigma) ** 2

    def exact_step(self, problem, x0_hat: Tensor, r: float, var: float, gens, mean: bool = False) -> Tensor:
        """A draw from p(x0 | x_t, y) ~ N(x0; x0_hat, r^2 I) N(y; A x0, var I), exactly: perturb
        then solve (Papandreou & Yuille 2010), x' = x0_hat + r eps, y' = y + sqrt(var) eps_y,
        x0 = x' + A^T (A A^T + var / r^2 I)^-1 (y' - A x'); for var = 0 the projection of x' onto
        {A x = y} (singular-value floor: directions below it keep x', i.e. the prior draw).
        ``mean``: that Gaussian's mean instead of a draw (no perturbation)."""
        if mean:
            return gaussian_update(problem.operator, x0_hat, problem.y, var / r**2)
        x_pert = x0_hat + r * self.randn(gens, problem)
        y = problem.y
        if var > 0:
            shape = tuple(y.shape[1:])
            if y.is_complex():  # each of the real and imaginary parts has variance var
                e = randn(gens, (*shape, 2), y.real)
                e = torch.view_as_complex(e.contiguous())
            else:
                e = randn(gens, shape, y)
            y = y + var**0.5 * e
        return gaussian_update(problem.operator, x_pert, y, var / r**2)

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        scale = float(prior.data_scale)
        sigmas = self.levels(prior)
        var = self.exact_variance(problem, prior) if self.mcmc == "exact" else None
        if self.mcmc == "exact" and var is None:
            raise ValueError("daps: mcmc='exact' needs a linear operator (deepinv LinearPhysics) and "
                             "a Gaussian data term; use mcmc='langevin'")
        if var is not None:
            return self._run_exact(problem, prior, gens, sigmas, var)
        lr0 = self.DEFAULT_LR[self.step] if self.lr is None else self.lr
        loss, weight, hess = self.data_term(problem, prior)
        grad = self.data_grad(problem, loss, hess)
        linear, norm2, v = self._curvature_setup(problem, hess)
        mean_var = self._start_variance(problem, weight, hess)
        info = {"chain_start": "x0_hat" if mean_var is None else "mean"}
        # Langevin draws per generator call: bounded memory, fixed by the sample's size alone
        chunk = max(1, min(self.mcmc_steps, 2**20 // max(math.prod(problem.x_shape), 1)))
        # x_T = sigma_max eps in network units, whose 0 is data_center in ours
        x = float(prior.data_center) + sigmas[0] * self.randn(gens, problem)
        start = None  # the previous level's chain start (chain_start="mean")
        for i in self.iterate():
            s = sigmas[i]
            with torch.no_grad():
                x0_hat = self.ode_x0(prior, x, s, self.ode_sigma_min / scale)  # step 1
            if self.step == "lipschitz":  # per sample: c / L, L = 1 / s^2 + data curvature
                if not linear:
                    norm2, v = self._jacobian_norm2(problem, x0_hat, v, 20 if i == 0 else 3)
                lr = bcast(lr0 * self.lr_factor(i) / (1 / s**2 + weight * hess * norm2), x)
            else:  # the paper's lr acts on network units
                lr = x.new_full((len(problem),) + (1,) * len(problem.x_shape), lr0 * self.lr_factor(i) / scale**2)
            if mean_var is None:
                x0 = x0_hat.clone()
            else:  # the mean of the level's Gaussian target (chain_start="mean")
                # conjugate gradient started from the previous level's mean, which moves little
                # between levels, to MEAN_TOL (x0_hat at the first level)
                x0 = gaussian_update(problem.operator, x0_hat, problem.y, mean_var / s**2,
                                     guess=x0_hat if start is None else start, tol=self.MEAN_TOL).detach()
                start = x0
            x0 = self.langevin(x0, x0_hat, s, lr, weight, grad, gens, chunk)  # step 2
            x0 = x0.detach()
            self.guard(x0, i, "lr")
            if i + 1 < self.steps:
                x = x0 + sigmas[i + 1] * self.randn(gens, problem)  # step 3: re-noise
        return x0, info

    def langevin(self, x0: Tensor, x0_hat: Tensor, s: float, lr: Tensor, weight: float, grad, gens,
                 chunk: int) -> Tensor:
        """``mcmc_steps`` Langevin steps on p(x0 | x_t, y) from x0 (Eq. 9-10):
        x0 += lr (-weight grad(x0) + (x0_hat - x0) / s^2) + sqrt(2 lr) eps, lr per sample (B, 1, ...).

        Written as x0 <- (1 - lr / s^2) x0 + (lr / s^2) x0_hat - lr weight grad(x0) + sqrt(2 lr) eps with
        the per-level factors and the scaled kicks formed once (three in-place tensor operations per
        step besides the gradient), and the kicks drawn in the working precision (``rng.randn``'s
        ``native``; float64 draws take 5.4-6.0 ms per level of 100 steps at 3 x 32 x 32, float32
        0.9 ms). Measured on an idle Xeon, one core, benchmarks/overhead.py's DAPS setting (4 levels x
        3 ODE steps x 100 Langevin steps, inpainting 32 x 32): 0.291 s before, 0.283-0.290 s after."""
        shape, lr = x0.shape[1:], lr.to(x0.dtype)
        with torch.no_grad():
            keep = 1 - lr / s**2
            pull = (lr / s**2) * x0_hat
            push = -lr * weight
            kick_scale = (2 * lr).sqrt().unsqueeze(1)  # (B, 1, 1, ...) over a chunk of draws
            for k in range(self.mcmc_steps):
                if k % chunk == 0:
                    kicks = randn(gens, (min(chunk, self.mcmc_steps - k), *shape), x0, native=True)
                    kicks.mul_(kick_scale)
                g = grad(x0)
                x0 = torch.addcmul(pull, keep, x0)
                x0.addcmul_(push, g)
                x0.add_(kicks[:, k % chunk])
        return x0

    def _start_variance(self, problem, weight: float, hess: float | None) -> float | None:
        """v of the Langevin target's Gaussian data term ||y - A x||^2 / (2 v) when the chain starts
        at the target's mean, else None (the chain starts at x0_hat). "auto": the mean when the
        operator is linear and the data term Gaussian. The target's data curvature per unit of
        ||A||^2 is weight * hess = 1 / v (``data_term``)."""
        from deepinv.physics import LinearPhysics

        gaussian_linear = hess is not None and isinstance(problem.operator, LinearPhysics)
        if self.chain_start == "x0_hat" or (self.chain_start == "auto" and not gaussian_linear):
            return None
        if not gaussian_linear:
            raise ValueError("daps: chain_start='mean' needs a linear operator (deepinv LinearPhysics) "
                             "and a Gaussian data term; use chain_start='x0_hat' (the paper's)")
        return 1.0 / (weight * hess)

    def _run_exact(self, problem, prior, gens, sigmas: list[float], var: float) -> tuple[Tensor, dict]:
        """Algorithm 1 with step 2 sampled exactly (``exact_step``): one draw per level instead
        of ``mcmc_steps`` Langevin steps."""
        scale = float(prior.data_scale)
        x = float(prior.data_center) + sigmas[0] * self.randn(gens, problem)
        for i in self.iterate():
            s = sigmas[i]
            with torch.no_grad():
                x0_hat = self.ode_x0(prior, x, s, self.ode_sigma_min / scale)  # step 1
                # step 2; at the last level the Gaussian's mean: its spread r = sigma_min is the
                # approximation's, not the posterior's (a draw adds noise of std sigma_min everywhere
                # y is blind; the Langevin chain, started at x0_hat with small steps, adds little of it)
                last = i + 1 == self.steps
                x0 = self.exact_step(problem, x0_hat, s, var, gens, mean=last)
            self.guard(x0, i, "sigma_min", advice="the exact step failed; check the operator and y")
            if i + 1 < self.steps:
                x = x0 + sigmas[i + 1] * self.randn(gens, problem)  # step 3: re-noise
        return x0, {"mcmc": "exact"}
