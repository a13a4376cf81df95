"""Darcy flow: agreement with an independent scipy assembly, convergence order, adjoint-state gradient."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from invsolve.operators import build
from invsolve.operators.pde.darcy import Darcy, darcy_solve
from invsolve.operators.pde.grid import cell_centres


def _reference_solve(a: np.ndarray, f: float = 1.0) -> np.ndarray:
    """The same finite-volume scheme assembled cell by cell (loops, lil_matrix) and solved by spsolve."""
    n = a.shape[0]
    k = sp.lil_matrix((n * n, n * n))
    for i in range(n):
        for j in range(n):
            row = i * n + j
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                ii, jj = i + di, j + dj
                if 0 <= ii < n and 0 <= jj < n:
                    t = 2 * a[i, j] * a[ii, jj] / (a[i, j] + a[ii, jj])
                    k[row, row] += t
                    k[row, ii * n + jj] -= t
                else:
                    k[row, row] += 2 * a[i, j]
    b = np.full(n * n, f / n**2)
    return spla.spsolve(k.tocsr(), b).reshape(n, n)


def _threshold_field(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, 1, n, n, generator=g, dtype=torch.float64)
    z = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(z, (2, 2, 2, 2), mode="circular"), 5, 1)
    return torch.where(z[:, 0] >= 0, 12.0, 3.0).to(torch.float64)


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_agrees_with_independent_spsolve(solver):
    a = _threshold_field(24, 1)
    u = darcy_solve(a, solver=solver)[0].numpy()
    ref = _reference_solve(a[0].numpy())
    rel = np.abs(u - ref).max() / np.abs(ref).max()
    print(f"darcy {solver} vs independent spsolve: max rel diff {rel:.2e}")
    assert rel < 1e-6


def _manufactured(n: int) -> float:
    """Max error for u = sin(pi x) sin(pi y), a = 2 + x y^2, f = -div(a grad u), at cell centres."""
    y, x = cell_centres(n)
    pi = math.pi
    u = torch.sin(pi * x) * torch.sin(pi * y)
    a = 2 + x * y**2
    ux, uy = pi * torch.cos(pi * x) * torch.sin(pi * y), pi * torch.sin(pi * x) * torch.cos(pi * y)
    f = 2 * pi**2 * a * u - (y**2 * ux + 2 * x * y * uy)
    uh = darcy_solve(a[None], f)[0]
    return float((uh - u).abs().max())


def test_second_order_convergence():
    sizes = (16, 32, 64)
    errs = [_manufactured(n) for n in sizes]
    orders = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    print("darcy manufactured max errors", dict(zip(sizes, errs)), "orders", orders)
    assert all(1.8 < p < 2.3 for p in orders)


@pytest.mark.parametrize("param,sensors", [("a", None), ("log", 40)])
def test_adjoint_gradient_matches_finite_differences(param, sensors):
    n = 16
    a = _threshold_field(n, 2)[:, None]
    a = a * (1 + 0.1 * torch.rand(a.shape, dtype=torch.float64))
    x = torch.log(a) if param == "log" else a
    op = Darcy(size=n, param=param, sensors=sensors, seed=3)
    w = torch.randn(op.A(x).shape, dtype=torch.float64)

    def loss(z):
        return (op.A(z) * w).sum()

    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(xr), xr)
    d = torch.randn_like(x)
    eps = 1e-4 if param == "log" else 1e-3
    fd = (loss(x + eps * d) - loss(x - eps * d)) / (2 * eps)
    rel = abs(float((g * d).sum() - fd)) / abs(float(fd))
    print(f"darcy adjoint gradient ({param}, sensors={sensors}) vs central FD: rel err {rel:.2e}")
    assert rel < 1e-6


def test_cg_and_direct_gradients_agree_and_func_vjp():
    a = _threshold_field(12, 4).requires_grad_(True)
    w = torch.randn(1, 12, 12, dtype=torch.float64)
    (g1,) = torch.autograd.grad((darcy_solve(a) * w).sum(), a)
    (g2,) = torch.autograd.grad((darcy_solve(a, solver="cg") * w).sum(), a)
    assert torch.allclose(g1, g2, rtol=1e-8, atol=1e-12)
    _, vjp = torch.func.vjp(darcy_solve, a.detach())
    assert torch.allclose(vjp(w)[0], g1)


def test_batch_invariance_and_arithmetic_face():
    a = torch.cat([_threshold_field(10, s) for s in range(3)])
    u = darcy_solve(a)
    for i in range(3):
        assert torch.equal(u[i], darcy_solve(a[i : i + 1])[0])
    ua = darcy_solve(a, face="arithmetic")
    assert (ua - u).abs().max() > 0  # a different scheme on discontinuous a


def test_registry_shapes():
    op = build("darcy_sensors", size=32)
    assert op.n_sensors == math.ceil(500 * 32**2 / 128**2)
    y = op.A(torch.full((2, 1, 32, 32), 3.0))
    assert y.shape == (2, op.n_sensors)
    assert build("darcy", size=8).A(torch.ones(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    a, b = build("darcy_sensors", size=32, seed=5), build("darcy_sensors", size=32, seed=5)
    assert torch.equal(a.sensor_index, b.sensor_index)


def test_bad_input():
    op = Darcy(size=8)
    with pytest.raises(ValueError, match="> 0"):
        op.A(-torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        op.A(torch.full((1, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        op.A(torch.ones(1, 1, 8, 9))
    with pytest.raises(ValueError, match="shape"):
        op.A(torch.ones(1, 8, 8))
    # log-parameterised operator accepts negative values (a = exp(x) > 0)
    assert torch.isfinite(Darcy(size=8, param="log").A(-torch.ones(1, 1, 8, 8))).all()


def test_problem_accepts_darcy():
    """Problem probes the operator with a valid input (Darcy rejects the all-zero permeability)."""
    import invsolve

    op = build("darcy_sensors", size=16, noise_sigma=1e-4)
    a = torch.full((2, 1, 16, 16), 3.0, dtype=torch.float64)
    problem = invsolve.Problem.simulate(op, a, seed=0)
    assert problem.y.shape == (2, op.n_sensors)
    assert invsolve.Problem(op, problem.y, x_shape=(1, 16, 16)).x_shape == (1, 16, 16)
