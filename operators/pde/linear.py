"""Linear elliptic PDE operators on [0, 1]^2 with zero Dirichlet boundary: source f -> solution.

* ``Poisson``:    -Delta u = f,            A = (-Delta_h)^{-1}
* ``Helmholtz``:  Delta psi + k^2 psi = f, A = (Delta_h + k^2)^{-1}

Delta_h is the 5-point Laplacian on the n x n interior nodes j/(n+1) (second-order accurate). It is
diagonalised exactly by the 2-D DST-I (``grid.sine_basis``), so A = S diag(1/mu) S is applied in
O(n^3) dense work, on any device, to machine precision; A is symmetric, hence ``A_adjoint = A``, and
``A_dagger`` is the exact inverse (the stencil itself). Helmholtz at a resonance (k^2 equal to a
discrete Dirichlet eigenvalue) is singular: ValueError.
"""

from __future__ import annotations

from deepinv.physics import GaussianNoise, LinearPhysics
from torch import Tensor

from ..registry import register
from .grid import dirichlet_laplacian_eigs, laplacian_5pt, sine_basis


class _SpectralDirichlet(LinearPhysics):
    """Base: x (B, C, n, n) -> S diag(symbol) S x, with symbol = 1 / mu (mu the operator's eigenvalues)."""

    def __init__(self, size: int, noise_sigma: float = 0.0):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        super().__init__(noise_model=GaussianNoise(sigma=float(noise_sigma)), img_size=(1, size, size))
        self.size = size
        self._cache: dict = {}

    def eigenvalues(self) -> Tensor:
        """Eigenvalues mu (n, n) of the differential operator L with A = L^{-1} (float64)."""
        raise NotImplementedError

    def _consts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        key = (x.dtype, x.device)
        if key not in self._cache:
            self._cache[key] = (sine_basis(self.size, x.dtype, x.device),
                                (1.0 / self.eigenvalues()).to(x.dtype).to(x.device))
        return self._cache[key]

    def _check(self, x: Tensor) -> None:
        n = self.size
        if x.ndim != 4 or tuple(x.shape[-2:]) != (n, n):
            raise ValueError(f"{type(self).__name__} expects (B, C, {n}, {n}), got {tuple(x.shape)}")

    def A(self, x: Tensor, **kw) -> Tensor:
        self._check(x)
        s, inv = self._consts(x)
        return s @ ((s @ x @ s) * inv) @ s

    def A_adjoint(self, y: Tensor, **kw) -> Tensor:
        return self.A(y)


class Poisson(_SpectralDirichlet):
    """Poisson source-to-solution map f (B, C, n, n) -> u with -Delta u = f, u = 0 on the boundary.

    Grid: n x n interior nodes of [0, 1]^2, h = 1/(n+1). ``A_dagger(u) = -Delta_h u`` exactly.
    """

    def eigenvalues(self) -> Tensor:
        return dirichlet_laplacian_eigs(self.size)

    def A_dagger(self, y: Tensor, **kw) -> Tensor:
        self._check(y)
        return -laplacian_5pt(y)


class Helmholtz(_SpectralDirichlet):
    """Helmholtz source-to-field map f -> psi with Delta psi + k^2 psi = f, psi = 0 on the boundary.

    Args:
        size: interior nodes per side n (h = 1/(n+1)).
        k: wavenumber (rad per unit length); ValueError if k^2 is (within 1e-9 relative) a discrete
            Dirichlet eigenvalue, where the problem has no unique solution.
    """

    def __init__(self, size: int, k: float = 10.0, noise_sigma: float = 0.0):
        self.k = float(k)
        super().__init__(size, noise_sigma)
        mu = self.eigenvalues()
        if (mu.abs() <= 1e-9 * dirichlet_laplacian_eigs(size).max()).any():
            raise ValueError(f"Helmholtz k={k} is at a resonance of the discrete Dirichlet Laplacian "
                             f"(k^2 = {self.k**2:g} is an eigenvalue): the operator is singular")

    def eigenvalues(self) -> Tensor:
        return self.k**2 - dirichlet_laplacian_eigs(self.size)

    def A_dagger(self, y: Tensor, **kw) -> Tensor:
        self._check(y)
        return laplacian_5pt(y) + self.k**2 * y


@register("poisson", "Poisson -Delta u = f on [0,1]^2, zero Dirichlet: source (B,1,n,n) -> solution; size")
def _build_poisson(size: int = 64, noise_sigma: float = 0.0) -> Poisson:
    return Poisson(size, noise_sigma)


@register("helmholtz", "Helmholtz Delta psi + k^2 psi = f on [0,1]^2, zero Dirichlet: source -> field; size, k")
def _build_helmholtz(size: int = 64, k: float = 10.0, noise_sigma: float = 0.0) -> Helmholtz:
    return Helmholtz(size, k, noise_sigma)
