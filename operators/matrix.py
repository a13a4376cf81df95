"""Dense matrix operator y = M x + noise on flat (B, d) tensors (the Gaussian-mixture benchmark)."""

from __future__ import annotations

import torch
from deepinv.physics import DecomposablePhysics, GaussianNoise

from .registry import register


class Matrix(DecomposablePhysics):
    """A dense linear operator ``x (B, d) -> M x (B, m)`` with Gaussian noise of std ``noise_sigma``.

    Stored through its SVD ``M = U diag(s) V^T`` as a ``deepinv`` ``DecomposablePhysics``, so
    SVD-based solvers (DDRM, MCGdiff-style projections) and deepinv's fast ``prox_l2`` work on it.
    In the V-domain the singular values are padded with zeros to length d, so ``mask`` has shape (d,).

    Args:
        matrix: (m, d) tensor.
        noise_sigma: standard deviation of the additive Gaussian noise (0 for noiseless).
    """

    def __init__(self, matrix: torch.Tensor, noise_sigma: float = 0.0):
        matrix = torch.as_tensor(matrix)
        if matrix.ndim != 2:
            raise ValueError(f"Matrix expects a 2-D (m, d) tensor, got shape {tuple(matrix.shape)}")
        if not torch.isfinite(matrix).all():
            raise ValueError("Matrix contains NaN or Inf entries")
        if noise_sigma < 0:
            raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma}")
        m, d = matrix.shape
        u, s, vh = torch.linalg.svd(matrix, full_matrices=True)
        k = min(m, d)
        mask = torch.zeros(d, dtype=matrix.dtype)
        mask[:k] = s[:k]
        super().__init__(mask=mask, noise_model=GaussianNoise(sigma=float(noise_sigma)))
        self.register_buffer("matrix", matrix.clone())
        self.register_buffer("u", u)  # (m, m)
        self.register_buffer("vh", vh)  # (d, d)
        self.m, self.d = m, d

    @property
    def noise_sigma(self) -> float:
        return float(self.noise_model.sigma)

    def _check(self, x: torch.Tensor, n: int, what: str) -> None:
        if x.ndim != 2 or x.shape[1] != n:
            raise ValueError(f"Matrix expects {what} of shape (B, {n}), got {tuple(x.shape)}")

    # A and A^T use the dense (m, d) matrix: for m << d this costs O(m d) per sample instead of the
    # O(d^2) of going through V; the SVD factors serve SVD-based solvers and prox/pseudo-inverse.
    def A(self, x: torch.Tensor, **kw) -> torch.Tensor:
        self._check(x, self.d, "x")
        return x @ self.matrix.to(x.dtype).T

    def A_adjoint(self, y: torch.Tensor, **kw) -> torch.Tensor:
        self._check(y, self.m, "y")
        return y @ self.matrix.to(y.dtype)

    def V_adjoint(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, self.d, "x")
        return x @ self.vh.to(x.dtype).T

    def V(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.vh.to(z.dtype)

    def U(self, z: torch.Tensor) -> torch.Tensor:
        # z lives in the padded V-domain (B, d); only the first min(m, d) coordinates reach y.
        k = min(self.m, self.d)
        out = z.new_zeros(z.shape[0], self.m)
        out[:, :k] = z[:, :k]
        return out @ self.u.to(z.dtype).T

    def U_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y, self.m, "y")
        k = min(self.m, self.d)
        c = y @ self.u.to(y.dtype)
        out = y.new_zeros(y.shape[0], self.d)
        out[:, :k] = c[:, :k]
        return out


@register("matrix", "dense matrix y = M x on (B, d) vectors; matrix=(m, d) tensor, noise_sigma")
def _build_matrix(matrix: torch.Tensor, noise_sigma: float = 0.0) -> Matrix:
    return Matrix(matrix, noise_sigma=noise_sigma)
