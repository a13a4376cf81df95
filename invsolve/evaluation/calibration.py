"""Calibration diagnostics: do a solver's samples say how unsure they should be?

A sampler that is sharp but wrong is worse than one that says it is unsure (DESIGN.md). Two settings:

- The Gaussian mixture, whose posterior is exact (``priors.GaussianMixture.posterior``):
  ``interval_coverage`` scores the central credible intervals of a solver's samples, per coordinate,
  by the mass the exact posterior puts in them (a calibrated solver's 90 % interval holds 90 % of the
  exact posterior). The mass is computed in closed form from the mixture's 1-D marginal CDF (a
  mixture of normals), which is what sampling the exact posterior estimates, without its noise.
  ``mode_weights`` gives the weight a solver puts on each mixture component (mean responsibility of
  its samples under the exact posterior) to compare with the exact posterior weights.
- Images, where only x_true is known: ``pixel_coverage`` counts the pixels whose true value falls in
  the samples' interval, from z-scores (x_true - mean) / std (Gaussian intervals) and from the samples'
  own central quantiles. Over many pixels a calibrated sampler covers 50 % and 90 % of them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invsolve.priors.gmm import GaussianMixture

LEVELS = (0.5, 0.9)


def central_interval(samples: Tensor, level: float) -> tuple[Tensor, Tensor]:
    """Per-coordinate central interval [q_{(1-l)/2}, q_{(1+l)/2}] of samples (n, ...) -> two (...)."""
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(samples.double().flatten(1), q, dim=0)
    return lo.reshape(samples.shape[1:]), hi.reshape(samples.shape[1:])


def marginal_cdf(mixture: GaussianMixture, x: Tensor) -> Tensor:
    """CDF of each coordinate's marginal at x (d,): sum_k w_k Phi((x_j - m_kj) / sqrt(C_jj))."""
    means = mixture.means.double().cpu()
    sd = torch.diagonal(mixture.cov.double().cpu()).clamp_min(0).sqrt()
    z = (x.double().cpu()[None] - means) / sd.clamp_min(1e-300)[None]
    phi = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return mixture.weights.double().cpu() @ phi


def interval_coverage(samples: Tensor, posterior: GaussianMixture, levels: tuple[float, ...] = LEVELS
                      ) -> dict[float, Tensor]:
    """Exact posterior mass of each coordinate's central credible interval of ``samples`` (n, d).

    Returns {level: (d,) masses}; a calibrated sampler gives ``level`` in every coordinate, an
    overconfident one less, an underconfident one more.
    """
    out = {}
    for level in levels:
        lo, hi = central_interval(samples, level)
        out[level] = marginal_cdf(posterior, hi) - marginal_cdf(posterior, lo)
    return out


def mode_weights(samples: Tensor, posterior: GaussianMixture, hard: bool = False) -> Tensor:
    """Weight of each posterior component among the samples (n, d) -> (K,).

    Soft (default): mean responsibility p(k | x) of the samples under the exact posterior mixture,
    an unbiased estimate of the exact weights for exact samples. ``hard``: fraction of samples whose
    most responsible component is k.
    """
    x = samples.double().to(posterior.means.device)
    evals = posterior.evals.double()[None].expand(len(x), -1)
    logp = posterior._component_logp(posterior._to_basis(x), evals)
    resp = torch.softmax(logp, dim=-1)
    if hard:
        resp = torch.nn.functional.one_hot(resp.argmax(-1), resp.shape[-1]).double()
    return resp.mean(0).cpu()


def gmm_calibration(samples: Tensor, posterior: GaussianMixture, levels: tuple[float, ...] = LEVELS
                    ) -> dict[str, float]:
    """Summary for one problem: mean coverage per level (over coordinates), mean |coverage - level|,
    and the total variation between the solver's and the exact mode weights (0 = same weights)."""
    cov = interval_coverage(samples, posterior, levels)
    out: dict[str, float] = {}
    for level, c in cov.items():
        tag = f"{round(100 * level)}"
        out[f"cov{tag}"] = float(c.mean())
        out[f"dev{tag}"] = float((c - level).abs().mean())
    out["mode_tv"] = 0.5 * float((mode_weights(samples, posterior) - posterior.weights.double().cpu())
                                 .abs().sum())
    return out


def pixel_coverage(samples: Tensor, x_true: Tensor, levels: tuple[float, ...] = LEVELS) -> dict[str, float]:
    """Coverage of x_true by pixel intervals from posterior samples (S, ...) of one image (...).

    ``z{level}``: fraction of pixels with |x_true - mean| <= z_l std (Gaussian interval, z_l the
    standard normal's (1 + l) / 2 quantile; std over the S samples, unbiased); ``q{level}``: fraction
    inside the samples' central quantile interval. Also ``z_rms``, the root mean square z-score (1 for
    a calibrated Gaussian posterior; > 1 overconfident), and ``std_mean``, the mean pixel std.
    """
    s = samples.double().cpu()
    x = x_true.double().cpu().reshape(s.shape[1:])
    mean, std = s.mean(0), s.std(0).clamp_min(1e-12)
    z = (x - mean) / std
    out = {"z_rms": float(z.pow(2).mean().sqrt()), "std_mean": float(std.mean())}
    normal = torch.distributions.Normal(0.0, 1.0)
    for level in levels:
        tag = f"{round(100 * level)}"
        zl = float(normal.icdf(torch.tensor((1 + level) / 2)))
        out[f"z{tag}"] = float((z.abs() <= zl).double().mean())
        lo, hi = central_interval(s, level)
        out[f"q{tag}"] = float(((x >= lo) & (x <= hi)).double().mean())
    return out
