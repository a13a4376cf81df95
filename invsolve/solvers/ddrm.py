"""DDRM: denoising diffusion restoration models.

Kawar, Elad, Ermon & Song 2022, "Denoising Diffusion Restoration Models", NeurIPS 2022, arXiv 2201.11793,
Eq. 7 (x_T) and Eq. 8 (the steps), written, as the paper does, in the variance-exploding form
x_t / sqrt(abar_t) = x0 + sigma_t eps and in the spectral space of A = U diag(s) V^T. Per coordinate j of
V^T x, with y_bar_j = (U^T y)_j / s_j:

- s_j = 0 (A does not see it): a DDIM step, x0 + sqrt(1 - eta^2) sigma_s eps_hat + eta sigma_s z;
- sigma_s < sigma_y / s_j (the measurement is noisier than x_s): x0 + sqrt(1 - eta^2) sigma_s
  (y_bar_j - x0) / (sigma_y / s_j) + eta sigma_s z;
- sigma_s >= sigma_y / s_j: (1 - eta_b) x0 + eta_b y_bar_j + sqrt(sigma_s^2 - sigma_y^2 eta_b^2 / s_j^2) z.

The loop is the official code's ``efficient_generalized_steps`` (bahjat-kawar/ddrm,
functions/denoising.py; runners/diffusion.py ``sample_image`` for the time grid), in the operator's
units (images in [0, 1]; the official code works in [-1, 1], which is affine-equivalent: every update
is a combination of x0, x_t and y_bar whose weights sum to one, so only the initial state of the
unobserved coordinates, the network's 0, carries the prior's ``data_center``):

- time grid: seq = range(0, N, N // steps) (spacing "uniform"), visited from the noisiest; the last
  step goes to abar = 1 (the official seq_next = -1), where x_{-1} = x0 on unobserved coordinates;
- x_T: observed coordinates with s_j sigma_T > sigma_y start at y_bar_j + sqrt(sigma_T^2 -
  sigma_y^2 / s_j^2) z, the others at sigma_T z; the network then sees x_T = V(.) / sigma_T (the
  official ``init_y / largest_sigmas``; alpha_T = 1 / sqrt(1 + sigma_T^2) would be exact, a 1e-4
  relative difference kept for trace equality);
- eta_A = eta_C = eta (the official ``--eta``), eta_B = ``eta_b``;
- singular values below ``floor`` times the largest are zeroed (the official code zeroes 1-D blur
  factors below 3e-2, so 2-D products below about 1e-3, and general SVDs below 1e-3).

Deviations from the official code (``branching="official"`` restores both):

- Ties s_j sigma_s = sigma_y go to the "noisier" branch, as in the paper's Eq. 8 (sigma_t >= sigma_y
  / s_j); the official code's strict inequalities send them to the unobserved branch. A tie happens at
  the last step of a noiseless problem (sigma_s = sigma_y = 0), where the paper returns y_bar (eta_b =
  1: exact data consistency) and the code the network's x0.
- Coordinates whose singular value is zeroed by the floor are unobserved (the paper's s_j = 0). The
  official code keeps them in its list of singular values, so with sigma_y > 0 they fall in its
  "less noisy" branch with the update x0 + sqrt(1 - eta^2) sigma_s (U^T y)_j / sigma_y + eta sigma_s z
  (measurement noise used as a noise draw).
- Noise: one draw z per step, mapped to the spectral space by V^T (the official code draws three,
  one per branch, directly in the spectral space: the same distribution for an orthogonal V). The time
  grid has exactly ``steps`` steps; for a ``steps`` that does not divide N the official range(0, N,
  N // steps) has a few more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from invsolve import paths as P

from .base import VP_FAMILY, Preset, Solver, path_coefs, solver_path
from .linalg import SVD_FLOOR, require_gaussian, require_svd, singular_values
from .registry import register
from .schedules import timesteps

_DDRM_SOURCE = ("bahjat-kawar/ddrm README.md (every example: --timesteps 20 --eta 0.85 --etaB 1) and "
                "main.py (--eta default 0.85, --etaB default 1)")


@register
@dataclass
class DDRM(Solver):
    """DDRM with the paper's defaults: 20 steps, eta = 0.85, eta_b = 1 (Sec. 5; the official README).

    ``floor``: singular values below ``floor`` times the largest count as 0 (unobserved), so that a
    noiseless deblurring does not divide by singular values near 1e-20. ``branching``: "paper" (the
    paper's inequalities; floored coordinates unobserved) or "official" (the code's; see the module
    docstring). Works on decomposable operators (deepinv ``DecomposablePhysics``) only.
    """

    name = "ddrm"
    description = "Denoising diffusion restoration models, SVD-based (Kawar et al. 2022)"
    presets: ClassVar[dict[str, dict[str, Preset]]] = {"paper": {"*": Preset(
        {"steps": 20, "eta": 0.85, "eta_b": 1.0}, _DDRM_SOURCE,
        "sigma_0 on the official command line is in [0, 1] units, as ours (runners/diffusion.py "
        "doubles it for [-1, 1])")}}

    steps: int = 20
    eta: float = 0.85
    eta_b: float = 1.0
    path: str | None = None
    spacing: str = "uniform"
    floor: float = SVD_FLOOR
    branching: str = "paper"

    def validate(self) -> None:
        if not (0 <= self.eta <= 1 and 0 <= self.eta_b <= 1):
            raise ValueError(f"ddrm: eta and eta_b must lie in [0, 1], got {self.eta}, {self.eta_b}")
        if not 0 <= self.floor < 1:
            raise ValueError(f"ddrm: floor must lie in [0, 1), got {self.floor}")
        if self.branching not in ("paper", "official"):
            raise ValueError(f"ddrm: branching must be 'paper' or 'official', got {self.branching!r}")

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        op = require_svd(problem.operator, self.name)
        sy = require_gaussian(problem, self.name)
        like = self.like(problem)
        path = solver_path(prior, self.path)
        ts = timesteps(path, self.steps, self.spacing)
        sig = path.sigma_canon(ts).tolist() + [0.0]  # the last step goes to abar = 1 (sigma = 0)
        scale = path.scale if isinstance(path, P.ScaledPath) else 1.0
        center = path.center if isinstance(path, P.ScaledPath) else 0.0

        s = singular_values(op, self.floor).to(like.device, like.dtype)
        seen = s > 0
        s_safe = torch.where(seen, s, torch.ones_like(s))
        uty = op.U_adjoint(problem.y) * _phase(op)  # U^T y with a complex mask's phase removed
        y_bar = torch.where(seen, uty / s_safe, torch.zeros_like(uty))
        sy_j = sy / s_safe  # measurement noise of y_bar_j
        zeroed = None
        if self.branching == "official" and sy > 0:
            raw = op.mask.abs() if torch.is_tensor(op.mask) else torch.tensor(abs(float(op.mask)))
            zeroed = (raw.to(like.device) > 0) & ~seen
            # (U^T y_net)_j / sigma_y in the code's [-1, 1] units is this, in ours, on zeroed coordinates
            ones = torch.ones((1, *problem.x_shape), dtype=like.dtype, device=like.device)
            u_zero = op.U_adjoint(problem.y - center * op.A(ones)) * _phase(op) / sy

        def spectral_noise() -> Tensor:
            return op.V_adjoint(self.randn(gens, problem))

        # Eq. 7 (x_T): observed coordinates noisier than y start at y_bar with the remaining variance.
        s_T = sig[0]
        z = spectral_noise()
        large = seen & (s * s_T > sy)
        ones = torch.ones((1, *problem.x_shape), dtype=like.dtype, device=like.device)
        center_b = op.V_adjoint(center * ones)  # the network's 0, seen in the spectral space
        xb = torch.where(large, y_bar + torch.sqrt((s_T**2 - sy_j**2).clamp_min(0)) * z, center_b + s_T * z)
        # The official x_T = V(init) / sigma_T in network units (a VP chain's alpha_T = 1 / sqrt(1 +
        # sigma_T^2) ~ 1 / sigma_T); x_T^net = scale x_T + alpha_T shift gives, in operator units:
        a_T = path_coefs(path, ts[0], like)[0]
        a_init = 1 / (s_T * scale) if isinstance(P.base_of(path), VP_FAMILY) else a_T
        x = a_init * (_real(op.V(xb)) - center) + a_T * center
        for i in self.iterate():
            a_t = path_coefs(path, ts[i], like)[0]
            a_s = path_coefs(path, ts[i + 1], like)[0] if i + 1 < self.steps else torch.ones_like(a_t)
            s_t, s_s = sig[i], sig[i + 1]
            with torch.no_grad():
                x0 = prior.x0_at(x, ts[i].to(like.dtype), path)
            x0b, xb = op.V_adjoint(x0), op.V_adjoint(x / a_t)
            eps_b = (xb - x0b) / s_t
            z = spectral_noise()
            c = (1 - self.eta**2) ** 0.5 * s_s
            unseen = x0b + c * eps_b + self.eta * s_s * z  # s_j = 0: DDIM
            if sy > 0:  # the measurement is noisier than x_s: soft pull towards y_bar
                soft = x0b + c * (uty - s * x0b) / sy + self.eta * s_s * z
            else:
                soft = unseen  # never selected: sigma_s < 0 is impossible
            hard = (1 - self.eta_b) * x0b + self.eta_b * y_bar + torch.sqrt(
                (s_s**2 - sy_j**2 * self.eta_b**2).clamp_min(0)) * z
            if self.branching == "paper":
                xb = torch.where(~seen, unseen, torch.where(s * s_s < sy, soft, hard))
            else:  # the official strict inequalities; ties go to the unobserved branch
                xb = torch.where(seen & (s * s_s > sy), hard, torch.where(seen & (s * s_s < sy), soft, unseen))
                if zeroed is not None:
                    xb = torch.where(zeroed, x0b + c * u_zero + self.eta * s_s * z, xb)
            x = a_s * _real(op.V(xb))
            self.guard(x, i, "floor", advice=f"raise floor (now {self.floor:g}) or check the "
                       "measurement scale")
        return x, {}


def _phase(op) -> Tensor | float:
    """conj(m / |m|) for a complex mask m (A = U diag(m) V^T), so that U^T y conj(phase) = |m| V^T x."""
    m = op.mask
    if torch.is_tensor(m) and m.is_complex():
        return (m / m.abs().clamp_min(torch.finfo(m.real.dtype).tiny)).conj()
    return 1.0


def _real(x: Tensor) -> Tensor:
    return x.real if x.is_complex() else x
