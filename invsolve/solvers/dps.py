"""DPS: diffusion posterior sampling.

Chung, Kim, McCann, Klasky & Ye 2023, "Diffusion Posterior Sampling for General Noisy Inverse Problems",
ICLR 2023, arXiv 2209.14687, Algorithm 1 (Gaussian noise) and Algorithm 2 / Eq. 16 (Poisson noise).
Ancestral DDPM steps on the VP path, each followed by a gradient step on the measurement residual of
the Tweedie estimate x0_hat(x_t).

Official code: github.com/DPS2022/diffusion-posterior-sampling, ``guided_diffusion/gaussian_diffusion.py``
(``p_sample_loop``, ``DDPM.p_sample``), ``guided_diffusion/condition_methods.py`` (``PosteriorSampling``,
``grad_and_value``) and ``configs/*_config.yaml``; ``tests/test_trace_dps.py`` runs a transcription of
that loop beside this solver and checks that the network sees the same inputs at every call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from invsolve import paths as P

from .base import Preset, Solver, ddim_step, path_coefs, path_coefs_host, solver_path, start_state
from .linalg import operator_norm2, require_linear
from .registry import register
from .schedules import timesteps

_REPO = "DPS2022/diffusion-posterior-sampling"
_NOISE_NOTE = ("the paper's sigma_y = 0.05 is in [-1, 1] units: 0.025 for images in [0, 1]; "
               "steps from configs/diffusion_config.yaml (timestep_respacing 1000)")


def _paper(scale: float, config: str, extra: str = "") -> Preset:
    return Preset({"zeta": scale, "steps": 1000}, f"{_REPO}: configs/{config} (conditioning.params."
                  f"scale)", _NOISE_NOTE + extra)


@register
@dataclass
class DPS(Solver):
    """DPS (Alg. 1): x_{i-1} = DDPM step(x_i, x0_hat) - zeta * grad_{x_i} ||y - A(x0_hat(x_i))||.

    ``zeta`` is the step scale of the official code (``conditioning.params.scale``), stated in the
    network's units (images in [-1, 1]) and converted once with ``prior.data_scale``; the norm is
    not squared, which equals the paper's zeta_i = zeta' / ||y - A x0_hat|| on the squared norm
    with zeta' = zeta / 2. Defaults: 1000 steps (the official respacing "1000"), zeta = 1.0.
    ``preset="paper"`` sets the official per-task scale (0.3 for SR and deblurring, 0.5 for
    inpainting, 1.0 for phase retrieval). x0_hat is clipped to the prior's data range, as the
    official ``clip_denoised``.

    Why zeta = 1.0 by default: the paper's 0.3 is tuned for 1000 steps, and the total pull on the
    measurement grows with the number of steps. Measured with the shipped natural-rgb prior (4 crops
    of the held-out photo, sigma_y = 0.02, mean PSNR, zeta 0.3 / 1.0): 32x32 sr4 21.2 / 26.6 dB at
    100 steps, 26.4 / 28.9 at 300, 28.2 / 26.2 at 1000; 32x32 blur_gauss (15x15, std 2) 26.1 / 29.5
    at 100 steps, 29.1 / 29.2 at 1000; 64x64 at 100 steps sr4 20.3 / 25.6 (22.5 at 0.5), blur_gauss
    25.4 / 28.4 (26.9 at 0.5). 1.0 stays close at 1000 steps and is far ahead at fewer.

    ``normalize`` (an addition of this project): "auto" (default) divides zeta by max(1, ||A||)
    for a linear operator (||A|| by power iteration, reported as ``info["op_norm"]``); "none" is
    the paper's step. The gradient of ||y - A x0_hat|| grows with ||A||, and the paper's zeta was
    tuned on masks, blurs and down-sampling, whose norms are at most 1, so nothing changes there;
    on a larger operator the step would move x ||A|| times further (sparse-view CT: ||A|| ~ 60) and
    DPS returned garbage: noiseless CT 32 x 32 (robustness matrix, 1000 steps) 15.2 dB, 35.1 with
    the normalised step (A^+ y 34.9). With it DPS on (c A, c y) is DPS on (A, y) for ||A|| <= 1
    (tests/test_solvers.py). Nonlinear operators keep the paper's step.

    ``likelihood``: "auto" follows the problem's noise model; "gaussian" the plain residual (Alg. 1);
    "poisson" the residual weighted by Lambda = diag(1 / (2 y)), ||(y - A x0_hat) / sqrt(2 y)||
    (Eq. 16, Alg. 2); "poisson_code" the official code's Poisson branch (``grad_and_value``):
    ||y - A x0_hat|| times the mean of 1 / |y| over the measurement's entries, with y in the
    network's units (y_net = s (y - center A(1)), linear operators). The two Poisson forms differ:
    the code's weight is one scalar per sample and blows up where y_net is near 0 (mid-grey pixels
    in [-1, 1] units), Eq. 16 weights each entry by its Poisson variance; "auto" uses Eq. 16.

    Deviations from the official code (each checked in tests/test_trace_dps.py):
    - the norm is taken per sample; the official ``torch.linalg.norm(difference)`` runs over the
      whole batch, which couples the samples of a batch (their steps shrink with the batch size);
      the same with a batch of 1;
    - the DDPM step uses the fixed-small variance (the posterior variance of q(x_{i-1} | x_i, x0)),
      where the official sampler reads a learned-range variance from the network's extra output
      channels (``model_var_type: learned_range``): the canonical prior returns only x0.
    """

    name = "dps"
    description = "Diffusion posterior sampling (Chung et al. 2023, Alg. 1; Poisson: Alg. 2)"
    presets: ClassVar[dict[str, dict[str, Preset]]] = {"paper": {
        "sr4": _paper(0.3, "super_resolution_config.yaml"),
        "blur_gauss": _paper(0.3, "gaussian_deblur_config.yaml"),
        "blur_motion": _paper(0.3, "motion_deblur_config.yaml"),
        "inpaint_random": _paper(0.5, "inpainting_config.yaml"),
        "inpaint_box": _paper(0.5, "inpainting_config.yaml",
                              "; the box mask is the file's commented mask_len_range option"),
        "phase_retrieval": _paper(1.0, "phase_retrieval_config.yaml"),
    }}

    steps: int = 1000
    zeta: float = 1.0
    likelihood: str = "auto"
    clip: bool = True
    path: str | None = None
    spacing: str = "guided"
    normalize: str = "auto"

    LIKELIHOODS: ClassVar[tuple[str, ...]] = ("auto", "gaussian", "poisson", "poisson_code")

    def validate(self) -> None:
        if self.zeta < 0:
            raise ValueError(f"{self.name}: zeta must be >= 0, got {self.zeta}")
        if self.normalize not in ("auto", "none"):
            raise ValueError(f"{self.name}: normalize must be 'auto' or 'none' (the paper's), "
                             f"got {self.normalize!r}")
        if self.likelihood not in self.LIKELIHOODS:
            raise ValueError(f"{self.name}: likelihood must be one of {self.LIKELIHOODS}, "
                             f"got {self.likelihood!r}")
        if self.path is not None:
            P.get_path(self.path)

    def residual_norms(self, problem, x0: Tensor, scale: float = 1.0, center: float = 0.0) -> Tensor:
        """Per-sample data misfit whose gradient DPS follows, shape (B,).

        Gaussian: ||y - A x0||. Poisson (Eq. 16): ||(y - A x0) / sqrt(2 y)||. "poisson_code":
        ||y - A x0|| mean_j 1 / |y_net,j| with y_net = scale (y - center A(1)) the measurement in the
        network's units (``scale``, ``center``: the prior's ``data_scale`` and ``data_center``).
        """
        r = problem.residual(x0)
        kind = problem.noise.kind if self.likelihood == "auto" else self.likelihood
        if kind == "poisson":
            r = r / torch.sqrt(2 * problem.y.clamp_min(1e-3))
        norms = r.reshape(len(problem), -1).norm(dim=1)
        if kind == "poisson_code":
            op = require_linear(problem.operator, f"{self.name} (likelihood='poisson_code')")
            y_net = scale * (problem.y - center * op.A(torch.ones_like(x0)) if center else problem.y)
            # |y_net| = 0 would make the official weight infinite; 1e-8 keeps it finite (the guard
            # then names zeta) and changes nothing elsewhere.
            weight = (1 / y_net.abs().clamp_min(1e-8)).reshape(len(problem), -1).mean(dim=1)
            norms = norms * weight
        return norms

    def project(self, problem, prior, x: Tensor, now: tuple[float, float],
                after: tuple[float, float], gens) -> Tensor:
        """Hook after the gradient step (identity for DPS; MCG projects onto the measurement).
        ``now`` = (alpha, sigma) of the step's input x_i, ``after`` those of its output x_{i-1}, as
        host floats (no device read-back in the loop)."""
        return x

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        path = solver_path(prior, self.path)
        ts = timesteps(path, self.steps, self.spacing)
        like = self.like(problem)
        x = start_state(path, ts[0], self.randn(gens, problem))  # line 1: x_N ~ N(0, I)
        zeta = self.zeta / prior.data_scale  # the paper's zeta acts on network units
        info = {}
        op_norm = self.operator_norm(problem, like)
        if op_norm is not None:
            zeta, info["op_norm"] = zeta / P.bcast(op_norm.clamp_min(1.0), x), op_norm
        scale, center = float(prior.data_scale), float(prior.data_center)
        lo_hi = prior.data_range if self.clip else None
        one, zero = torch.ones((), dtype=like.dtype), torch.zeros((), dtype=like.dtype)
        for i in self.iterate():
            a_t, s_t = path_coefs(path, ts[i], like)
            x = x.detach().requires_grad_(True)
            x0 = prior.x0_at(x, ts[i].to(like.dtype), path)  # lines 3-4: Tweedie estimate
            if lo_hi is not None:  # the official code's clip_denoised
                x0 = x0.clamp(*lo_hi)
            norms = self.residual_norms(problem, x0, scale, center)  # per sample, never batch-summed
            (grad,) = torch.autograd.grad(norms.sum(), x)
            a_s, s_s = path_coefs(path, ts[i + 1], like) if i + 1 < self.steps else (one, zero)
            noise = self.randn(gens, problem)
            with torch.no_grad():
                x = ddim_step(x, x0, a_t, s_t, a_s, s_s, 1.0, noise)  # lines 5-6: ancestral step
                x = x - zeta * grad  # line 7: measurement gradient step
                x = self.project(problem, prior, x, path_coefs_host(path, ts[i]),
                                 path_coefs_host(path, ts[i + 1]) if i + 1 < self.steps else (1.0, 0.0), gens)
            self.guard(x, i, "zeta")
        return x.detach(), {"residual_norm": norms.detach(), **info}

    def operator_norm(self, problem, like: Tensor) -> Tensor | None:
        """Per-sample ||A|| under ``normalize="auto"`` for a linear operator (power iteration),
        else None (see the class docstring)."""
        from deepinv.physics import LinearPhysics

        if self.normalize == "none" or not isinstance(problem.operator, LinearPhysics):
            return None
        # a coarse estimate first (a lower bound; SR x4 stops after ~30 iterations at rtol 1e-4, ~500
        # at 1e-9): when it is at most 1 the step is the paper's, otherwise the accurate value
        args = (problem.operator, problem.x_shape, like, len(problem))
        norm2 = operator_norm2(*args, rtol=1e-4)
        if bool((norm2 > 1).any()):
            norm2 = operator_norm2(*args)
        return norm2.sqrt()
