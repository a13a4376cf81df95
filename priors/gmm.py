"""Gaussian-mixture prior with an exact denoiser at every noise level and an exact linear posterior.

This is the test oracle of the project (DESIGN.md): for a linear operator with Gaussian noise the
posterior is again a Gaussian mixture in closed form, so a solver's samples can be compared with exact
posterior samples (the benchmark of Cardoso et al. 2023, MCGdiff, arXiv 2308.07983, Sec. 4.1).
Written by hand because no library offers a mixture denoiser/posterior in torch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .base import Prior, as_sigma

if TYPE_CHECKING:
    from invsolve.problem import Problem


class GaussianMixture(Prior):
    """p(x0) = sum_k w_k N(x0; mu_k, C) on flat vectors x0 in R^d, with one shared covariance C.

    Args:
        means: (K, d) component means.
        weights: (K,) non-negative weights (normalised here).
        std: isotropic component standard deviation, C = std^2 I (ignored when ``cov`` is given).
        cov: optional (d, d) symmetric positive semi-definite covariance shared by all components.
    """

    def __init__(self, means: Tensor, weights: Tensor, std: float = 1.0, cov: Tensor | None = None):
        super().__init__()
        means = torch.as_tensor(means)
        if not means.is_floating_point():
            means = means.float()
        weights = torch.as_tensor(weights, dtype=means.dtype)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        k, d = means.shape
        if weights.shape != (k,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be {k} non-negative numbers with a positive sum")
        if cov is None:
            if std <= 0:
                raise ValueError(f"std must be > 0, got {std}")
            evals = torch.full((d,), float(std) ** 2, dtype=means.dtype)
            evecs = torch.eye(d, dtype=means.dtype)
        else:
            cov = torch.as_tensor(cov, dtype=means.dtype)
            if cov.shape != (d, d):
                raise ValueError(f"cov must have shape ({d}, {d}), got {tuple(cov.shape)}")
            evals, evecs = torch.linalg.eigh(0.5 * (cov + cov.T))
            evals = evals.clamp_min(0)
        self.register_buffer("means", means)
        self.register_buffer("weights", weights / weights.sum())
        # C = evecs diag(evals) evecs^T: every sigma's denoiser is diagonal in this basis.
        self.register_buffer("evals", evals)
        self.register_buffer("evecs", evecs)
        self.isotropic = cov is None  # evecs = I: skip the basis changes
        self.shape = (d,)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def cov(self) -> Tensor:
        return (self.evecs * self.evals) @ self.evecs.T

    def _flat(self, x: Tensor) -> Tensor:
        if x.shape[1:] != (self.dim,):
            raise ValueError(f"GaussianMixture of dimension {self.dim} expects x of shape (B, {self.dim}), "
                             f"got {tuple(x.shape)}")
        return x

    def _to_basis(self, x: Tensor) -> Tensor:
        return x if self.isotropic else x @ self.evecs.to(x.dtype)

    def _from_basis(self, z: Tensor) -> Tensor:
        return z if self.isotropic else z @ self.evecs.to(z.dtype).T

    def _component_logp(self, z: Tensor, var: Tensor) -> Tensor:
        """(B, K) log N(z; m_k, diag(var)) + log w_k, z in the eigenbasis, var (B, d) marginal variances."""
        mz = self._to_basis(self.means.to(z.dtype))  # (K, d)
        # ||z - m||^2 expanded so that no (B, K, d) tensor is formed (d can be 800, B thousands).
        iv = 1.0 / var
        quad = (z**2 * iv).sum(-1, keepdim=True) - 2 * (z * iv) @ mz.T + iv @ (mz**2).T
        logp = -0.5 * quad - 0.5 * torch.log(2 * math.pi * var).sum(-1, keepdim=True)
        return logp + torch.log(self.weights.to(z.dtype))[None]

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Exact E[x0 | x0 + sigma eps = x]: a responsibility-weighted sum of Gaussian posteriors."""
        x = self._flat(x)
        sigma = as_sigma(sigma, x)
        evals = self.evals.to(x.dtype)
        z = self._to_basis(x)
        var = evals[None] + sigma[:, None] ** 2  # (B, d) marginal variance of z under each component
        resp = torch.softmax(self._component_logp(z, var), dim=-1)  # (B, K)
        gain = evals[None] / var  # C (C + sigma^2 I)^-1 in the eigenbasis
        # E[z0 | z, k] = m_k + gain (z - m_k); average over k with the responsibilities.
        mean_m = resp @ self._to_basis(self.means.to(x.dtype))  # (B, d)
        return self._from_basis(mean_m + gain * (z - mean_m))

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """log p_sigma(x) of the noised mixture, shape (B,)."""
        x = self._flat(x)
        sigma = as_sigma(sigma, x)
        var = self.evals.to(x.dtype)[None] + sigma[:, None] ** 2
        return torch.logsumexp(self._component_logp(self._to_basis(x), var), dim=-1)

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """n exact samples, shape (n, d), from a generator seeded with ``seed``."""
        g = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        dtype = self.means.dtype
        comp = torch.multinomial(self.weights.cpu().double(), n, replacement=True, generator=g)
        noise = torch.randn(n, self.dim, generator=g, dtype=torch.float64).to(dtype)
        root = (self.evecs.cpu() * self.evals.cpu().sqrt())
        x = self.means.cpu()[comp] + noise @ root.T
        return x.to(self.means.device)

    def posterior(self, problem: Problem) -> GaussianMixture:
        """The exact posterior p(x0 | y) for a linear operator with Gaussian noise (one measurement).

        With likelihood N(y; A x, s^2 I): every component becomes N(m_k, S) with
        S = (C^-1 + A^T A / s^2)^-1 and m_k = mu_k + C A^T (A C A^T + s^2 I)^-1 (y - A mu_k), and its
        weight is multiplied by the evidence N(y; A mu_k, A C A^T + s^2 I) (Bishop 2006, Eq. 2.113-2.117).
        The operator must expose ``matrix`` (operators.Matrix) or be linear on flat vectors.
        """
        if len(problem) != 1:
            raise ValueError(f"posterior() takes one measurement; this problem has {len(problem)}: "
                             "use problem[i] to pick one")
        sigma_y = problem.noise_sigma
        if sigma_y is None:
            raise ValueError("the exact posterior needs Gaussian measurement noise "
                             f"(got {type(problem.operator.noise_model).__name__})")
        dtype = torch.float64
        a = _matrix_of(problem.operator, self.dim, dtype)
        y = problem.y.reshape(-1).to(dtype)
        c = self.cov.to(dtype)
        mu = self.means.to(dtype)
        gram = a @ c @ a.T + sigma_y**2 * torch.eye(a.shape[0], dtype=dtype)  # (m, m)
        gain = c @ a.T @ torch.linalg.inv(gram)  # (d, m)
        resid = y[None] - mu @ a.T  # (K, m)
        new_means = mu + resid @ gain.T
        new_cov = c - gain @ a @ c
        chol = torch.linalg.cholesky(gram)
        white = torch.linalg.solve_triangular(chol, resid.T, upper=False)  # (m, K)
        log_ev = -0.5 * (white**2).sum(0) - torch.log(torch.diagonal(chol)).sum()
        logw = torch.log(self.weights.to(dtype)) + log_ev
        weights = torch.softmax(logw, 0)
        out_dtype = self.means.dtype
        return GaussianMixture(new_means.to(out_dtype), weights.to(out_dtype),
                               cov=(0.5 * (new_cov + new_cov.T)).to(out_dtype)).to(self.means.device)


def _matrix_of(operator, d: int, dtype: torch.dtype) -> Tensor:
    """The (m, d) matrix of a linear operator on flat vectors (from ``.matrix`` or by probing A)."""
    mat = getattr(operator, "matrix", None)
    if isinstance(mat, Tensor):
        return mat.to(dtype)
    try:
        eye = torch.eye(d, dtype=dtype)
        return operator.A(eye).T.to(dtype)
    except Exception as err:
        raise ValueError("posterior() needs a linear operator on (B, d) vectors, e.g. operators.Matrix") from err


def mcgdiff_mixture(dim: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> GaussianMixture:
    """The 25-component prior of the MCGdiff benchmark (Cardoso et al. 2023, Sec. 4.1).

    Means (8i, 8j, 8i, 8j, ...) for i, j in {-2, ..., 2}, unit covariance, weights w_k ~ N(0, 1)^2
    normalised. ``dim`` must be even.
    """
    if dim % 2:
        raise ValueError(f"the MCGdiff mixture needs an even dimension, got {dim}")
    g = torch.Generator().manual_seed(seed)
    grid = torch.tensor([(8.0 * i, 8.0 * j) for i in range(-2, 3) for j in range(-2, 3)], dtype=torch.float64)
    means = grid.repeat(1, dim // 2)
    weights = torch.randn(25, generator=g, dtype=torch.float64) ** 2
    return GaussianMixture(means.to(dtype), (weights / weights.sum()).to(dtype), std=1.0)
