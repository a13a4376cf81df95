"""Trace equivalence of ot_ode with the reference OT-ODE loop.

Transcribed from annegnx/PnP-Flow, ``pnpflow/methods/ot_ode.py``, ``OT_ODE.solve_ip`` (the OT-ODE of
Pokle et al. 2023, Alg. 1, as benchmarked by Martin et al. 2025), in its own conventions: images in
[-1, 1], a torchcfm velocity network ``model(x, t)`` with noise at t = 0, x = t0 H^T y + (1 - t0) eps,
N Euler steps of 1 / N on [0, 1] of which the first int(N t0) are skipped, r_t^2 = (1 - t)^2 /
((1 - t)^2 + t^2), the Gram system (r_t^2 H H^T + sigma^2 I) sol = y - H x1_hat solved as the reference
solves it (inpainting: its diagonal branch; other operators: its generic branch, a linear solve, here
exact through the operator's dense matrix), g = vec + (1 - t) J_v^T vec, x += dt (v + (1 - t) / t gamma g).

The reference calls the network twice per step on the same input (once without gradients, once inside
``torch.autograd.functional.vjp``); the second call only rebuilds the graph and is not recorded.
"""

import math

import pytest
import torch
from trace_utils import SCALE, SHIFT, NoiseStream, Recorder, assert_same_calls, tiny_net, to_ops

import invsolve
from invsolve import operators, priors

C, H, W = 3, 8, 8


def _dense(op) -> torch.Tensor:
    """The operator's matrix (rows: measurements), built column by column."""
    eye = torch.eye(C * H * W, dtype=torch.float64).reshape(-1, C, H, W)
    return torch.stack([op.A(e[None]).reshape(-1) for e in eye], 1)


def reference(net, op, y, sigma, steps, t0, gamma, noise, times=None, start=None):
    """The reference loop in [-1, 1] units; returns (x in network units, recorder). ``times`` / ``start``
    replace its grid and its A^T y start (to check invsolve's own defaults)."""
    rec = Recorder(net)
    ones = torch.ones(1, C, H, W, dtype=torch.float64)
    y_net = SCALE * y + SHIFT * op.A(ones)  # the measurement of the [-1, 1] image
    s_net = SCALE * sigma
    init = op.A_adjoint(y_net) if start is None else start(y_net)
    t_first = t0 if times is None else times[0]
    x = t_first * init + (1 - t_first) * noise.randn(C, H, W)
    delta = 1 / steps
    grid = [delta * it for it in range(int(steps * t0), steps)] if times is None else times
    dt = delta if times is None else times[1] - times[0]
    a = _dense(op)
    for t in grid:
        t1 = torch.full((1,), t, dtype=torch.float64)
        with torch.no_grad():
            vt = rec(x, t1)
            rt2 = (1 - t1) ** 2 / ((1 - t1) ** 2 + t1**2)
            x1_hat = x + (1 - t1.view(-1, 1, 1, 1)) * vt
            d = y_net - op.A(x1_hat)
            if isinstance(op, operators.imaging.Inpainting):  # the reference's inpainting branch
                sol = d / (op.A(ones) * rt2 + s_net**2)
            else:  # its generic branch: solve (r_t^2 H H^T + sigma^2 I) sol = d
                gram = rt2 * a @ a.T + s_net**2 * torch.eye(a.shape[0], dtype=torch.float64)
                sol = torch.linalg.solve(gram, d.reshape(-1)).reshape(d.shape)
            vec = op.A_adjoint(sol)
        gam = 1.0 if gamma == "constant" else math.sqrt(t / (t**2 + (1 - t) ** 2))
        g = torch.autograd.functional.vjp(lambda z, t1=t1: net(z, t1), inputs=x, v=vec)[1]
        with torch.no_grad():
            g = vec + (1 - t) * g
            x = x + dt * (vt + (1 - t) / t * gam * g)
    return x, rec


def _problem(task, sigma):
    kw = {"blur_gauss": {"kernel_size": 5, "std": 1.0}, "inpaint_random": {"missing": 0.5}}[task]
    op = operators.build(task, img_size=(C, H, W), noise_sigma=sigma, **kw).to(torch.float64)
    x = torch.rand(1, C, H, W, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return op, invsolve.Problem.simulate(op, x, seed=0)


@pytest.mark.parametrize("task, gamma", [("blur_gauss", "sqrt"), ("inpaint_random", "constant")])
def test_published_form(task, gamma):
    """grid="skip", init="adjoint", floor=0: the reference loop call by call."""
    net = tiny_net(C)
    ours = Recorder(net)
    prior = priors.from_flow(ours, noise_at_zero=True, data_range=(-1, 1))
    op, problem = _problem(task, 0.025)
    steps, t0 = 10, 0.3
    res = invsolve.solve(problem, prior, "ot_ode", steps=steps, t0=t0, gamma=gamma, grid="skip",
                         init="adjoint", floor=0.0, seed=3)
    x, theirs = reference(net, op, problem.y, 0.025, steps, t0, gamma, NoiseStream(3, 1))
    assert len(theirs.calls) == steps - int(steps * t0) == res.nfe
    assert_same_calls(ours, theirs)
    torch.testing.assert_close(res.x, to_ops(x), rtol=0, atol=1e-5)


def test_defaults_are_the_reference_with_its_grid_and_start_changed():
    """Default grid (all steps on [t0, 1]) and start (the posterior mean for N(0, I) data in [-1, 1]
    units: A^T (A A^T + sigma^2 I)^-1 y_net); the floor does not act on a mask (singular values 0, 1)."""
    net = tiny_net(C, seed=2)
    ours = Recorder(net)
    prior = priors.from_flow(ours, noise_at_zero=True, data_range=(-1, 1))
    op, problem = _problem("inpaint_random", 0.01)
    steps, t0 = 8, 0.2
    res = invsolve.solve(problem, prior, "ot_ode", steps=steps, t0=t0, seed=4)
    times = [t0 + i * (1 - t0) / steps for i in range(steps)]
    a, s2 = _dense(op), (SCALE * 0.01) ** 2
    gram = a @ a.T + s2 * torch.eye(a.shape[0], dtype=torch.float64)
    start = lambda y_net: (a.T @ torch.linalg.solve(gram, y_net.reshape(-1))).reshape(1, C, H, W)
    x, theirs = reference(net, op, problem.y, 0.01, steps, t0, "constant", NoiseStream(4, 1),
                          times=times, start=start)
    assert_same_calls(ours, theirs)
    torch.testing.assert_close(res.x, to_ops(x), rtol=0, atol=1e-5)


def test_noiseless_deblurring_is_finite():
    """sigma_y = 0 on a 9x9 Gaussian blur (singular values down to ~1e-9): the floored Gram solve
    keeps the default finite and in range."""
    net = tiny_net(C, seed=5)
    prior = priors.from_flow(net, noise_at_zero=True, data_range=(-1, 1))
    op = operators.build("blur_gauss", img_size=(C, 16, 16), kernel_size=9, std=2.0).to(torch.float64)
    x = torch.rand(1, C, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = invsolve.solve(invsolve.Problem.simulate(op, x, seed=0), prior, "ot_ode", steps=20, seed=0)
    assert torch.isfinite(res.x).all() and res.x.abs().max() < 10
