"""The Gaussian-mixture posterior benchmark (Cardoso et al. 2023, MCGdiff, arXiv 2308.07983, Sec. 4.1).

A 25-component mixture on an 8-spaced grid in d dimensions, a random d_y x d operator A = U diag(s) V^T
with Haar-random U, V and s sorted U(0, 1), noise std sigma_y = U(0, 1) * max(s) (their viz_gaussian.py)
unless fixed, an exact denoiser and an exact posterior. A solver is scored by the sliced Wasserstein
distance between its samples and exact posterior samples, beside the floor (two independent exact sample
sets) and the prior (exact prior samples, a sampler that ignores y).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from invsolve.operators import Matrix
from invsolve.priors import GaussianMixture, mcgdiff_mixture
from invsolve.problem import Problem

from .metrics import sliced_wasserstein


@dataclass
class GMMCase:
    """One benchmark problem: prior, problem (one measurement) and exact posterior."""

    prior: GaussianMixture
    problem: Problem
    posterior: GaussianMixture
    sigma_y: float


def haar_orthogonal(n: int, g: torch.Generator) -> Tensor:
    """A Haar-distributed random orthogonal n x n matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None]


def make_case(dim: int, dim_y: int, seed: int, sigma_y: float | None = None,
              dtype: torch.dtype = torch.float64) -> GMMCase:
    """Benchmark problem number ``seed`` for (d, d_y); ``sigma_y`` fixed or MCGdiff's random draw."""
    g = torch.Generator().manual_seed(10_000 * dim + 100 * dim_y + seed)
    prior = mcgdiff_mixture(dim, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)), dtype=dtype)
    u, v = haar_orthogonal(dim_y, g), haar_orthogonal(dim, g)
    s = torch.sort(torch.rand(dim_y, generator=g, dtype=torch.float64), descending=True).values
    a = u @ torch.diag(s) @ v[:dim_y]
    if sigma_y is None:
        sigma_y = float(torch.rand((), generator=g, dtype=torch.float64) * s.max())
    op = Matrix(a.to(dtype), noise_sigma=sigma_y)
    x_true = prior.sample(1, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    problem = Problem.simulate(op, x_true, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    return GMMCase(prior, problem, prior.posterior(problem), sigma_y)


def score_case(case: GMMCase, solver: str, n: int, steps: int, seed: int = 0,
               n_directions: int = 100, **hp) -> dict:
    """Run ``solver`` with n chains on one case; return its sliced Wasserstein to the exact posterior."""
    import invsolve

    reference = case.posterior.sample(n, seed=seed + 1)
    start = time.perf_counter()
    try:
        res = invsolve.solve(case.problem.repeat(n), case.prior, solver, seed=seed + 7, steps=steps, **hp)
    except FloatingPointError as err:  # the solver's NaN guard: recorded as a failure, not hidden
        return {"sw": float("nan"), "nfe": 0, "seconds": time.perf_counter() - start, "error": str(err)}
    sw = sliced_wasserstein(res.x, reference, n_directions, seed=seed)
    return {"sw": sw, "nfe": res.nfe, "seconds": time.perf_counter() - start}


def reference_scores(case: GMMCase, n: int, seed: int = 0, n_directions: int = 100) -> dict:
    """Floor (exact vs exact posterior samples) and prior (exact prior vs exact posterior samples)."""
    reference = case.posterior.sample(n, seed=seed + 1)
    other = case.posterior.sample(n, seed=seed + 2)
    prior = case.prior.sample(n, seed=seed + 3)
    return {"floor": sliced_wasserstein(other, reference, n_directions, seed=seed),
            "prior": sliced_wasserstein(prior, reference, n_directions, seed=seed)}
