"""2-D Navier-Stokes: Taylor-Green decay, Kolmogorov forcing, gradients, black box, CFL guard."""

import math

import pytest
import torch

from invsolve.operators import build
from invsolve.operators.pde.grid import torus_nodes
from invsolve.operators.pde.navier_stokes import NavierStokes, NSSolver


def _energy(s: NSSolver, w: torch.Tensor) -> torch.Tensor:
    u, v = s.velocity(w)
    return 0.5 * (u**2 + v**2).mean((-2, -1))


def test_taylor_green_energy_decay():
    """w = cos(k x) cos(k y) (k = 2, |k|^2 = 2 k^2 = 8) is a steady Euler solution; with viscosity its
    amplitude decays as exp(-2 nu k^2 t) and its kinetic energy as exp(-4 nu k^2 t)."""
    n, k, nu, t = 32, 2, 0.02, 1.0
    s = NSSolver(n, nu=nu, forcing=None, dt=0.01)
    y, x = torus_nodes(n)
    w0 = (torch.cos(k * x) * torch.cos(k * y))[None]
    w1 = s.evolve(w0, t)
    ratio = float(_energy(s, w1) / _energy(s, w0))
    exact = math.exp(-4 * nu * k**2 * t)
    rel = abs(ratio - exact) / exact
    amp = float(w1.abs().max()) / math.exp(-2 * nu * k**2 * t)
    print(f"Taylor-Green k={k}: energy ratio {ratio:.10f} vs exact {exact:.10f}, rel err {rel:.2e}")
    assert rel < 1e-6
    assert abs(amp - 1) < 1e-6


def test_kolmogorov_forcing_from_rest():
    """From w0 = 0 the flow stays shear: w(t) = -4 cos(4y) (1 - exp(-16 nu t)) / (16 nu)."""
    n, nu, t = 32, 1 / 200, 1.0
    s = NSSolver(n, nu=nu, dt=0.01)
    y, _ = torus_nodes(n)
    w = s.evolve(torch.zeros(1, n, n, dtype=torch.float64), t)[0]
    exact = -4 * torch.cos(4 * y) * (1 - math.exp(-16 * nu * t)) / (16 * nu)
    assert float((w - exact).abs().max() / exact.abs().max()) < 1e-5


def _smooth_field(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y, x = torus_nodes(n)
    w = torch.zeros(n, n, dtype=torch.float64)
    for kx in range(-3, 4):
        for ky in range(-3, 4):
            c = torch.randn(2, generator=g, dtype=torch.float64)
            w += c[0] * torch.cos(kx * x + ky * y) + c[1] * torch.sin(kx * x + ky * y)
    return w[None, None]


def test_gradient_matches_finite_differences_and_checkpointing():
    op = NavierStokes(size=32, t_final=0.2, dt=0.01, subsample=2)
    x = _smooth_field(32, 0)
    w = torch.randn(op.A(x).shape, dtype=torch.float64)

    def loss(z):
        return (op.A(z) * w).sum()

    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(xr), xr)
    d = _smooth_field(32, 1)
    eps = 1e-5
    fd = (loss(x + eps * d) - loss(x - eps * d)) / (2 * eps)
    rel = abs(float((g * d).sum() - fd)) / abs(float(fd))
    print(f"NS autograd (checkpointed) gradient vs central FD: rel err {rel:.2e}")
    assert rel < 1e-6
    # checkpointing changes memory, not values
    xr2 = x.clone().requires_grad_(True)
    out = op.solver.evolve(xr2[:, 0], 0.2, checkpoint_segments=False)[:, None, ::2, ::2]
    (g2,) = torch.autograd.grad((out * w).sum(), xr2)
    assert torch.allclose(g, g2, rtol=1e-10, atol=1e-14)


def test_black_box_has_no_gradient():
    x = _smooth_field(16, 2).float()
    bb = NavierStokes(size=16, t_final=0.05, dt=0.01, subsample=4, differentiable=False)
    ref = NavierStokes(size=16, t_final=0.05, dt=0.01, subsample=4)
    assert torch.equal(bb.A(x), ref.A(x))
    xr = x.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="black box"):
        bb.A(xr).sum().backward()


def test_cfl_and_bad_input():
    x = 50 * _smooth_field(32, 3)
    with pytest.raises(ValueError, match="CFL"):
        NavierStokes(size=32, t_final=0.5, dt=0.1).A(x)
    with pytest.raises(ValueError, match="NaN"):
        NavierStokes(size=16).A(torch.full((1, 1, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        NavierStokes(size=16).A(torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="divide"):
        NavierStokes(size=20, subsample=8)


def test_registry_and_shapes():
    op = build("navier_stokes", size=32, subsample=4, t_final=0.02, dt=0.01)
    assert op.A(torch.zeros(2, 1, 32, 32)).shape == (2, 1, 8, 8)
    assert op.A(torch.zeros(2, 1, 32, 32)).dtype == torch.float32


def _saved_bytes(s: NSSolver, steps: int, checkpointed: bool) -> int:
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    w0 = _smooth_field(16, 4)[:, 0].requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        s.evolve(w0, steps * s.dt, checkpoint_segments=checkpointed)
    return total[0]


def test_checkpointing_keeps_graph_memory_sublinear():
    """Only segment boundaries (~sqrt(steps) states) are kept for backward, not every step."""
    s = NSSolver(16, dt=0.01)
    full = [_saved_bytes(s, m, False) for m in (16, 64)]
    ckpt = [_saved_bytes(s, m, True) for m in (16, 64)]
    assert full[1] / full[0] > 3.5  # grows with every step
    assert ckpt[1] / ckpt[0] < 2.5  # ~ sqrt(4) = 2
    assert ckpt[1] < 0.05 * full[1]
