"""Grids and spectral kernels shared by the PDE operators (batched torch, any device and dtype).

Two grids are used:

* the **unit square** [0, 1]^2 with N x N cells of width h = 1/N (cell centres (i + 1/2) h), on which
  Darcy flow is discretised by finite volumes, and with n x n interior nodes x_j = j/(n+1) on which the
  Poisson/Helmholtz 5-point Laplacian acts (zero Dirichlet data on the boundary nodes);
* the **torus** [0, 2 pi)^2 with N x N nodes x_j = 2 pi j / N, on which Navier-Stokes is solved
  pseudo-spectrally with ``torch.fft``.

Arrays are indexed ``[..., row, col]`` = ``[..., y, x]`` (image convention): the last axis is x.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sine_basis(n: int, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Tensor:
    """Orthonormal, symmetric DST-I matrix S (n, n), S_jk = sqrt(2/(n+1)) sin(pi j k/(n+1)), j,k=1..n.

    S diagonalises the 1-D second-difference matrix with zero Dirichlet ends, and S @ S = I. torch has
    no DST; a dense matrix is exact and, for n <= a few hundred, as fast as an FFT-based transform.
    """
    j = torch.arange(1, n + 1, dtype=torch.float64)
    s = math.sqrt(2.0 / (n + 1)) * torch.sin(math.pi * j[:, None] * j[None, :] / (n + 1))
    return s.to(dtype=dtype, device=device)


def dirichlet_laplacian_eigs(n: int, dtype: torch.dtype = torch.float64,
                             device: torch.device | str = "cpu") -> Tensor:
    """Eigenvalues (n, n) of the 5-point *negative* Laplacian -Delta_h on n x n interior nodes of [0,1]^2.

    lambda_pq = (4/h^2) (sin^2(p pi h/2) + sin^2(q pi h/2)), h = 1/(n+1); eigenvectors S[:, p] x S[:, q].
    """
    h = 1.0 / (n + 1)
    p = torch.arange(1, n + 1, dtype=torch.float64)
    lam1 = 4.0 / h**2 * torch.sin(p * math.pi * h / 2) ** 2
    return (lam1[:, None] + lam1[None, :]).to(dtype=dtype, device=device)


def dst2(x: Tensor, s: Tensor) -> Tensor:
    """Orthonormal 2-D DST-I of x (..., n, n) along the last two axes (its own inverse)."""
    return s @ x @ s


def laplacian_5pt(u: Tensor) -> Tensor:
    """5-point Laplacian Delta_h u of interior values u (..., n, n), zero Dirichlet boundary, h = 1/(n+1)."""
    n = u.shape[-1]
    h = 1.0 / (n + 1)
    p = torch.nn.functional.pad(u, (1, 1, 1, 1))
    return (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:] - 4 * u) / h**2


def interior_nodes(n: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Coordinates (y, x), each (n, n), of the interior nodes j/(n+1) of the unit square."""
    t = torch.arange(1, n + 1, dtype=dtype) / (n + 1)
    return torch.meshgrid(t, t, indexing="ij")


def cell_centres(n: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Coordinates (y, x), each (n, n), of the cell centres (i + 1/2)/n of the unit square."""
    t = (torch.arange(n, dtype=dtype) + 0.5) / n
    return torch.meshgrid(t, t, indexing="ij")


def torus_nodes(n: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Coordinates (y, x), each (n, n), of the nodes 2 pi j / n of the torus [0, 2 pi)^2."""
    t = 2 * math.pi * torch.arange(n, dtype=dtype) / n
    return torch.meshgrid(t, t, indexing="ij")


def torus_wavenumbers(n: int, dtype: torch.dtype = torch.float64,
                      device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Integer wavenumbers (ky, kx) of shape (n, n//2+1) matching ``torch.fft.rfft2`` on [0, 2 pi)^2."""
    ky = torch.fft.fftfreq(n, d=1.0 / n, dtype=dtype, device=device)
    kx = torch.fft.rfftfreq(n, d=1.0 / n, dtype=dtype, device=device)
    return torch.meshgrid(ky, kx, indexing="ij")


def dealias_mask(n: int, device: torch.device | str = "cpu") -> Tensor:
    """Boolean (n, n//2+1) mask of the 2/3 rule (Orszag 1971): keep |kx|, |ky| <= n/3."""
    ky, kx = torus_wavenumbers(n, device=device)
    kmax = n / 3.0
    return (ky.abs() <= kmax) & (kx.abs() <= kmax)
