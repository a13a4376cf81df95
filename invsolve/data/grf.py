"""Gaussian random fields with covariance sigma^2 (-Delta + tau^2 I)^(-alpha) (Matern-like).

* ``grf_neumann``: on [0, 1]^2 with Neumann boundary conditions, expanded in the cosine (DCT) basis
  cos(pi k1 x) cos(pi k2 y), sampled at cell centres: the Darcy permeability prior of FNO
  (Li et al., arXiv 2010.08895, Sec. 5.2) and DiffusionPDE (Huang et al., arXiv 2406.17763), alpha = 2,
  tau = 3, with the constant mode removed, thresholded to a in {12, 3}.
* ``grf_periodic``: on the periodic unit square (FFT basis), the Navier-Stokes initial vorticity of FNO
  (alpha = 2.5, tau = 7); the same field read on [0, 2 pi)^2.

torch has no DCT, so the Neumann field is synthesised with a dense cosine matrix (exact; O(N^3) per
field, negligible next to the PDE solves). Every field has its own generator (``invsolve.rng``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from invsolve.rng import make_generators


def sample_seeds(seed: int, start: int, stop: int) -> list[int]:
    """Per-sample seeds for samples start..stop-1 of the set with ``seed``: a hash of (seed, i).

    torch's CPU generator keeps only the low 32 bits of a seed (seeds s and s + 2**32 give the same
    stream), so sets are kept apart by hashing (seed, i) with numpy's ``SeedSequence`` into 32 bits.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in range(start, stop)]


def _normal(seeds: list[int], shape: tuple[int, ...]) -> Tensor:
    gens = make_generators(seeds, len(seeds))
    return torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in gens])


def grf_neumann(n: int, size: int, alpha: float = 2.0, tau: float = 3.0, seed: int = 0,
                start: int = 0) -> Tensor:
    """n fields (n, size, size), float64, samples ``start .. start+n-1`` of the set with ``seed``.

    u(x, y) = sum_{k != 0} xi_k tau^(alpha-1) (pi^2 |k|^2 + tau^2)^(-alpha/2) cos(pi k1 x) cos(pi k2 y),
    xi_k ~ N(0, 1), k1, k2 = 0..size-1, evaluated at the cell centres (i + 1/2)/size.
    """
    if size < 2 or n < 0:
        raise ValueError(f"need size >= 2 and n >= 0, got size={size}, n={n}")
    k = torch.arange(size, dtype=torch.float64)
    x = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    basis = torch.cos(math.pi * x[:, None] * k[None, :])  # (size points, size modes)
    sqrt_eig = tau ** (alpha - 1) * (math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + tau**2) ** (-alpha / 2)
    sqrt_eig[0, 0] = 0.0
    xi = _normal(sample_seeds(seed, start, start + n), (size, size))
    return basis @ (xi * sqrt_eig) @ basis.T


def grf_periodic(n: int, size: int, alpha: float = 2.5, tau: float = 7.0, sigma: float | None = None,
                 seed: int = 0, start: int = 0) -> Tensor:
    """n periodic fields (n, size, size), float64, zero mean.

    u(x) = Re sum_{k != 0} xi_k sqrt(2) sigma (4 pi^2 |k|^2 + tau^2)^(-alpha/2) exp(2 pi i k.x) on the
    unit torus, xi_k ~ N(0, 1), integer k in the FFT range, sigma = tau^(alpha - 1) by default (FNO's
    Navier-Stokes initial condition). Read on [0, 2 pi)^2 the grid is the same (x -> 2 pi x).
    """
    if size < 2 or n < 0:
        raise ValueError(f"need size >= 2 and n >= 0, got size={size}, n={n}")
    sigma = tau ** (alpha - 1) if sigma is None else sigma
    k = torch.fft.fftfreq(size, d=1.0 / size, dtype=torch.float64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    sqrt_eig = math.sqrt(2) * sigma * (4 * math.pi**2 * k2 + tau**2) ** (-alpha / 2)
    sqrt_eig[0, 0] = 0.0
    xi = _normal(sample_seeds(seed, start, start + n), (size, size))
    return torch.fft.ifft2(xi * sqrt_eig).real * size**2
