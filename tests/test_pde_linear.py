"""Poisson and Helmholtz: adjoint tests, independent sparse solve, manufactured-solution convergence."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from invsolve.operators import build
from invsolve.operators.pde import Helmholtz, Poisson
from invsolve.operators.pde.grid import interior_nodes


def _ops():
    return [Poisson(24), Helmholtz(24, k=9.5)]


@pytest.mark.parametrize("op", _ops(), ids=["poisson", "helmholtz"])
def test_adjoint(op):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 24, 24, generator=g, dtype=torch.float64)
    y = torch.randn(3, 1, 24, 24, generator=g, dtype=torch.float64)
    lhs = (op.A(x) * y).sum()
    rhs = (x * op.A_adjoint(y)).sum()
    rel = abs(float(lhs - rhs)) / abs(float(lhs))
    print(f"{type(op).__name__} adjoint test rel err {rel:.1e}")
    assert rel < 1e-12
    assert torch.allclose(op.A_dagger(op.A(x)), x, atol=1e-10)


@pytest.mark.parametrize("op", _ops(), ids=["poisson", "helmholtz"])
def test_agrees_with_sparse_solve(op):
    n = 24
    h = 1 / (n + 1)
    d2 = sp.diags([1.0, -2.0, 1.0], [-1, 0, 1], shape=(n, n), dtype=float) / h**2
    lap = sp.kron(sp.eye(n), d2) + sp.kron(d2, sp.eye(n))
    mat = -lap if isinstance(op, Poisson) else lap + op.k**2 * sp.eye(n * n)
    f = np.random.default_rng(0).standard_normal((n, n))
    ref = spla.spsolve(mat.tocsc(), f.ravel()).reshape(n, n)
    u = op.A(torch.from_numpy(f)[None, None])[0, 0].numpy()
    assert np.abs(u - ref).max() / np.abs(ref).max() < 1e-10


def _manufactured_err(kind: str, n: int, k: float = 5.0) -> float:
    """u = x (1 - x) sin(pi y) e^y vanishes on the boundary; f from the exact derivatives.

    k = 5 keeps k^2 = 25 away from the Dirichlet eigenvalues pi^2 (p^2 + q^2) (19.7, 49.3).
    """
    y, x = interior_nodes(n)
    pi = math.pi
    s, c, e = torch.sin(pi * y), torch.cos(pi * y), torch.exp(y)
    u = x * (1 - x) * s * e
    lap = -2 * s * e + x * (1 - x) * e * (s + 2 * pi * c - pi**2 * s)
    if kind == "poisson":
        uh = Poisson(n).A((-lap)[None, None])
    else:
        uh = Helmholtz(n, k=k).A((lap + k**2 * u)[None, None])
    return float((uh[0, 0] - u).abs().max())


@pytest.mark.parametrize("kind", ["poisson", "helmholtz"])
def test_manufactured_second_order(kind):
    sizes = (15, 31, 63)  # h = 1/16, 1/32, 1/64
    errs = [_manufactured_err(kind, n) for n in sizes]
    orders = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    print(f"{kind} manufactured max errors", errs, "orders", orders)
    assert all(1.9 < p < 2.1 for p in orders)


def test_resonance_and_shapes():
    n = 8
    h = 1 / (n + 1)
    k_res = math.sqrt(8 / h**2 * math.sin(math.pi * h / 2) ** 2)  # (p, q) = (1, 1) eigenvalue
    with pytest.raises(ValueError, match="resonance"):
        Helmholtz(n, k=k_res)
    with pytest.raises(ValueError, match="expects"):
        Poisson(n).A(torch.zeros(1, 1, n, n + 1))
    assert build("poisson", size=8).A(torch.zeros(2, 1, 8, 8)).shape == (2, 1, 8, 8)
    assert build("helmholtz", size=8, k=3.0).A(torch.zeros(2, 1, 8, 8, dtype=torch.float32)).dtype == torch.float32
