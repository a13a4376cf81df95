"""RED-diff: a variational perspective on solving inverse problems with diffusion models.

Mardani, Song, Kautz & Vahdat 2023, arXiv 2305.04391, Algorithm 1 / Eq. 10-11, as the official code
runs it (NVlabs/RED-diff: algos/reddiff.py ``REDDIFF.sample``, main.py, utils/functions.py
``get_timesteps``, models/diffusion.py, _configs/algo/reddiff.yaml). The mean mu of the variational
distribution is optimised by Adam (betas (0.9, 0.99), eps 1e-8) over a descending sweep of DDPM
steps t; at each t, in the network's units ([-1, 1] images),

    x0_pred = mu + sigma_x0 z0,  x_t = alpha_t x0_pred + sigma_t eps,  eps_hat = eps_theta(x_t, t),
    loss = lambda w(sigma_t / alpha_t) mean(sg(eps_hat - eps) x0_pred)
           + v mean(|y - A(x0_pred)|^2) / 2,

where w is ``weight`` ("linear": the inverse square-root SNR sigma_t / alpha_t of Eq. 11, or "sqrt",
"square", "log", "trunc_linear", "power2over3", "const": the official ``denoise_term_weight``),
lambda = ``lam`` (``grad_term_weight``) and v = ``obs_weight``. The sweep is the official
``range(0, N, N // steps)`` reversed (spacing "uniform"; N = 1000, so steps should divide 1000 as in
the official runs, which otherwise make more than ``steps`` iterations). mu starts at A^+ y in
network units (``H_pinv(y_0)``), and the output is x0_pred of the last iteration, i.e. mu before the
last Adam step (what main.py saves); ``final="mu"`` returns mu after it. The official lr is
constant; invsolve's default decays it (see the deviations).

Units. ``lr`` and ``sigma_x0`` are in network units, as in the official configs. mu is optimised in
operator units (mu_net = s mu + shift, s = ``prior.data_scale``): with the loss written as
    lambda w mean(sg(eps_hat - eps) mu) + v s mean(|y - A mu|^2) / 2
(the official loss divided by s, up to a constant) its gradient in mu equals the official gradient
in mu_net element for element, so Adam's moments are the official ones, Adam's eps means the same,
and the step is lr / s. The regulariser's weight uses the network's sigma_t / alpha_t (s times the
operator-unit value). For a prior in operator units (s = 1) this is the paper's loss as written.

Deviations from the official code:
- the Adam lr decays linearly to 0 over the sweep by default (``lr_schedule="linear"``; the
  official lr is constant: ``lr_schedule="constant"``, set by every preset). With a constant lr,
  Adam's normalised steps keep mu jittering by about lr wherever the gradient is mostly the
  stochastic regulariser (unobserved pixels, ill-conditioned directions), up to the last step.
  Measured with the shipped natural-rgb prior, 2 crops 3x32x32 of the held-out photo, 1000 steps,
  lr 0.5 constant / lr 0.1 constant (the value of _configs/algo/reddiff.yaml) / lr 0.5 linear:
  random inpainting (70%), sigma_y 0.05: 15.2 / 26.2 / 28.2 dB PSNR (values in [-0.3, 1.3] with
  the first); noiseless Gaussian blur 9x9 std 2: 22.7 / 30.5 / 30.5 dB; SR4, sigma_y 0.01:
  (not run) / 28.2 / 29.2 dB. On the mixture benchmark (d = 8, 15 problems, sliced Wasserstein, lower is
  better) the decay costs at few steps and nothing at the default 1000: 7.54 -> 8.53 at 20 steps,
  4.84 -> 5.63 at 100, 5.04 -> 5.13 at 1000 (lr 0.1 constant: 9.32, 7.84, 5.18).
- each sample's loss is its own element mean, summed over the batch (the official averages over the
  whole batch, which makes each sample's gradient depend on the batch size through Adam's eps);
  identical for a batch of one, and batch-invariant here.
- the zero-weighted draw z0 is skipped when sigma_x0 = 0 (the official draws it anyway); with
  sigma_x0 > 0 both draws are made in the official order (z0, then eps).
- the pseudo-inverse is ``linalg.pinv`` (singular values below 1e-3 of the largest zeroed; the
  official zeroes 1-D blur singular values below 3e-2 and keeps every non-zero one otherwise), and
  for nonlinear operators deepinv's ``A_dagger`` (the official has an operator-specific H_pinv).
- ``init="zero"`` (mu = 0 in operator units) is not in the official code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from deepinv.physics import LinearPhysics
from torch import Tensor

from .base import Preset, Solver, path_coefs, path_coefs_host, solver_path
from .linalg import has_pseudo_inverse, pinv
from .registry import register
from .schedules import timesteps

WEIGHTS = {
    "linear": lambda r: r,
    "sqrt": math.sqrt,
    "square": lambda r: r * r,
    "log": lambda r: math.log(r + 1.0),
    "trunc_linear": lambda r: min(r, 1.0),
    "power2over3": lambda r: r ** (2 / 3),
    "const": lambda r: 1.0,
}

_SRC = "NVlabs/RED-diff"
_NOTE = ("The official lines run sigma_y = 0; their sigma_y is in [0, 1] units (main.py adds "
         "2 sigma_y noise to the [-1, 1] measurement). 1000 steps: sample_batch.sh (STEPS=1000; "
         "sample_test.sh uses 10 for smoke tests).")

def _official(lr: float) -> dict:
    return {"steps": 1000, "lam": 0.25, "lr": lr, "lr_schedule": "constant"}


_INPAINT = {"steps": 1000, "lam": 0.25, "lr": 0.25, "sigma_x0": 1e-4, "lr_schedule": "constant"}
_INPAINT_SRC = f"{_SRC}: sample_test.sh ('inpaint + reddiff + adam', deg in2_20ff)"


def _mean(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).mean(1)


@register
@dataclass
class REDDiff(Solver):
    """RED-diff: 1000 steps, lambda = 0.25, Adam lr = 0.5 (network units, the README's) decaying
    linearly to 0 (``lr_schedule``; "constant" is the official, see the deviations), "linear"
    denoiser weighting, sigma_x0 = 0, mu initialised at A^+ y ("pinv"; "zero": mu = 0). The
    presets carry the official per-task settings."""

    name = "reddiff"
    description = "Variational RED-diff, Adam over a descending t sweep (Mardani et al. 2023)"
    presets: ClassVar[dict[str, dict[str, Preset]]] = {"paper": {
        "blur_gauss": Preset(_official(0.5),
                             f"{_SRC}: sample_test.sh ('deblur + reddiff + adam', deblur_gauss)",
                             "Its kernel (utils/degredations.py, deblur_gauss) is the separable "
                             "5x5 exp(-x^2 / (2 25^2)), nearly a box blur. " + _NOTE),
        "sr4_pool": Preset(_official(0.1),
                           f"{_SRC}: sample_test.sh ('sr + reddiff + adam', deg sr4) with "
                           "_configs/algo/reddiff.yaml (lr 0.1, grad_term_weight 0.25)",
                           "The official sr4 is DDRM's 4x4 block average (our sr4_pool). "
                           + _NOTE),
        "sr4": Preset(_official(0.1),
                      f"{_SRC}: sample_test.sh ('sr + reddiff + adam', deg sr4) with "
                      "_configs/algo/reddiff.yaml (lr 0.1, grad_term_weight 0.25)",
                      "The official sr4 is a 4x4 block average (our sr4_pool); used for the "
                      "bicubic sr4 too. " + _NOTE),
        "inpaint_freeform": Preset(_INPAINT, _INPAINT_SRC,
                                   "Palette free-form masks (20-30% missing). " + _NOTE),
        "inpaint_box": Preset(_INPAINT, _INPAINT_SRC, "The official line is for free-form masks; "
                              "used for every inpainting task. " + _NOTE),
        "inpaint_random": Preset(_INPAINT, _INPAINT_SRC, "The official line is for free-form "
                                 "masks; used for every inpainting task. " + _NOTE),
        "phase_retrieval": Preset(_official(0.5),
                                  f"{_SRC}: sample_test.sh ('phase retrieval + reddiff + adam')",
                                  "Oversampling 2.0. " + _NOTE),
        "hdr": Preset(_official(0.5),
                      f"{_SRC}: sample_test.sh ('HDR + reddiff + adam')", _NOTE),
    }}

    steps: int = 1000
    lam: float = 0.25
    lr: float = 0.5
    lr_schedule: str = "linear"
    obs_weight: float = 1.0
    weight: str = "linear"
    sigma_x0: float = 0.0
    init: str = "pinv"
    final: str = "x0_pred"
    path: str | None = None
    spacing: str = "uniform"

    def validate(self) -> None:
        if self.init not in ("pinv", "zero"):
            raise ValueError(f"reddiff: init must be 'pinv' or 'zero', got {self.init!r}")
        if self.lr <= 0 or self.lam < 0 or self.sigma_x0 < 0:
            raise ValueError("reddiff: lr must be > 0, lam and sigma_x0 >= 0")
        if self.weight not in WEIGHTS:
            raise ValueError(f"reddiff: weight must be one of {sorted(WEIGHTS)}, "
                             f"got {self.weight!r}")
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError("reddiff: lr_schedule must be 'constant' or 'linear', "
                             f"got {self.lr_schedule!r}")
        if self.final not in ("x0_pred", "mu"):
            raise ValueError(f"reddiff: final must be 'x0_pred' or 'mu', got {self.final!r}")

    def initial_mean(self, problem, prior, like: Tensor) -> Tensor:
        """mu_0: A^+ y in network units (``init="pinv"``), or zeros."""
        shape = (len(problem), *problem.x_shape)
        if self.init == "zero":
            return torch.zeros(shape, dtype=like.dtype, device=like.device)
        op = problem.operator
        if isinstance(op, LinearPhysics):
            # H_pinv(y_net) with y_net = s y - s A(c): c + A^+ (y - A c) in operator units, so the
            # unobserved directions sit at the network's 0 (the centre c), not at 0
            c = torch.full(shape, float(prior.data_center), dtype=like.dtype, device=like.device)
            return (c + pinv(op, problem.y - op.A(c)).real).to(like.dtype)
        if not has_pseudo_inverse(op):
            raise ValueError(f"reddiff init='pinv' needs a linear operator or one that defines its own "
                             f"A_dagger; {type(op).__name__} has neither: use init='zero'")
        return op.A_dagger(problem.y).real.to(like.dtype)

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        path = solver_path(prior, self.path)
        ts = timesteps(path, self.steps, self.spacing)
        like = self.like(problem)
        scale = float(prior.data_scale)
        with torch.no_grad():
            mu0 = self.initial_mean(problem, prior, like)
        mu = mu0.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([mu], lr=self.lr / scale, betas=(0.9, 0.99))  # lr: network units
        weight = WEIGHTS[self.weight]
        for i in self.iterate():
            if self.lr_schedule == "linear":  # lr -> 0 at the last iteration
                opt.param_groups[0]["lr"] = self.lr / scale * (1 - i / max(self.steps - 1, 1))
            t = ts[i].to(like.dtype)
            a_t, s_t = path_coefs(path, ts[i], like)
            if self.sigma_x0 > 0:
                x0_pred = mu + (self.sigma_x0 / scale) * self.randn(gens, problem)
            else:
                x0_pred = mu
            eps = self.randn(gens, problem)
            with torch.no_grad():
                x_t = a_t * x0_pred + s_t * eps
                x0 = prior.x0_at(x_t, t, path)
                eps_hat = (x_t - a_t * x0) / s_t
            out = x0_pred.detach().clone()  # the official output; mu changes in place below
            fit = _mean(problem.residual(x0_pred).abs() ** 2) / 2
            reg = _mean((eps_hat - eps) * x0_pred)  # sg(eps_hat - eps)^T x0_pred
            a_h, s_h = path_coefs_host(path, ts[i])  # host floats: no device read-back per step
            lam_t = self.lam * weight(scale * s_h / a_h)  # sigma_t / alpha_t of the network
            loss = lam_t * reg + self.obs_weight * scale * fit
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            self.guard(mu.detach(), i, "lr")
        x = out if self.final == "x0_pred" else mu.detach()
        return x, {"fit": fit.detach()}
