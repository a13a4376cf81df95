"""Trace equivalence of dflow with the reference D-Flow loop.

Transcribed from annegnx/PnP-Flow, ``pnpflow/methods/d_flow.py``, ``D_FLOW.solve_ip`` and
``forward_flow_matching`` (Ben-Hamu et al. 2024 as benchmarked by Martin et al. 2025), in its own
conventions: images in [-1, 1], a torchcfm velocity network ``model(x, t)`` with noise at t = 0,
``steps_euler`` grid points on [0, 1] with a midpoint step between neighbours, the loss
sum_batch ||H(Phi(z)) - y||^2 + lmbda (0.5 clamp(||z||^2, +-1e6) - (d - 1) log(||z|| + 1e-5)),
start z = sqrt(alpha) Phi^-1(H^T y) + sqrt(1 - alpha) eps, then ``max_iter`` calls of
torch.optim.LBFGS(max_iter=LBFGS_iter, history_size=100, line_search_fn="strong_wolfe"), and the output
Phi(z) at the end.

Two substitutions, both stated in invsolve's docstring as deviations: the reference inverts the ODE with
adaptive dopri5 (torchdiffeq); the transcription uses the same midpoint grid backwards, as invsolve does
(the velocity at t = 1 taken at 1 - 1e-4, see ``inverse_flow``). The reference also recomputes Phi(z) after each LBFGS call
for its logs; those calls change nothing and are left out.

What is compared: (1) ``optimizer="torch"``, ``init="adjoint"``, ``checkpoint=False`` at batch size 1:
the whole reference loop, call by call; (2) the default per-sample L-BFGS shares the objective: one
evaluation (the ODE solve, the loss and its gradient, with checkpointing on) equals the reference's
closure. The per-sample optimiser itself is checked on quadratics in test_flow_solvers.py.
"""

import math

import torch
from trace_utils import SCALE, SHIFT, NoiseStream, Recorder, assert_same_calls, tiny_net, to_ops

import invsolve
from invsolve import operators, priors
from invsolve.solvers.dflow import DFlow

C, H, W = 3, 8, 8


def forward_flow(model, z, steps_euler, start_time=0.0):
    """The reference's Phi: midpoint steps between ``steps_euler`` grid points on [start_time, 1]."""
    delta = (1 - start_time) / (steps_euler - 1)
    for i in range(steps_euler - 1):
        t1 = torch.ones(len(z), dtype=torch.float64) * delta * i + start_time
        z = z + delta * model(z + delta / 2 * model(z, t1), t1 + delta / 2)
    return z


def inverse_flow(model, x, steps_euler):
    """Stand-in for the reference's dopri5 inversion: the midpoint grid backwards from t = 1. At t = 1
    invsolve reads its (operator-unit) state as x_t at t = 1 - 1e-4, which in network units is
    x_net - 1e-4 * shift (x_t^net = scale x_t + t shift)."""
    delta = 1 / (steps_euler - 1)
    for i in range(steps_euler - 1):
        t = 1 - delta * i
        t1 = min(t, 1 - 1e-4)
        v1 = model(x - (t - t1) * SHIFT, torch.full((len(x),), t1, dtype=torch.float64))
        t2 = torch.full((len(x),), t - delta / 2, dtype=torch.float64)
        x = x - delta * model(x - delta / 2 * v1, t2)
    return x


def reg(z, d):
    norm = torch.sqrt((z**2).sum([1, 2, 3]))
    return 0.5 * torch.clamp(norm**2, min=-1e6, max=1e6) - (d - 1) * torch.log(norm + 1e-5)


def _setup(seed=0, sigma=0.025):
    net = tiny_net(C, seed=seed)
    op = operators.build("sr2", img_size=(C, H, W), noise_sigma=sigma).to(torch.float64)
    x = torch.rand(1, C, H, W, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    problem = invsolve.Problem.simulate(op, x, seed=0)
    y_net = SCALE * problem.y + SHIFT * op.A(torch.ones(1, C, H, W, dtype=torch.float64))
    return net, op, problem, y_net


def test_published_loop():
    net, op, problem, y_net = _setup(0)
    ours, theirs = Recorder(net), Recorder(net)
    prior = priors.from_flow(ours, noise_at_zero=True, data_range=(-1, 1))
    max_iter, lbfgs_iter, steps_euler, lmbda, alpha = 2, 3, 4, 0.01, 0.1
    res = invsolve.solve(problem, prior, "dflow", steps=max_iter, lbfgs_iter=lbfgs_iter, history=100,
                         ode_steps=steps_euler - 1, lam=lmbda, alpha=alpha, init="adjoint",
                         optimizer="torch", checkpoint=False, seed=9)

    # the reference, in [-1, 1] units
    noise = NoiseStream(9, 1)
    d = C * H * W
    z = inverse_flow(theirs, op.A_adjoint(y_net), steps_euler)
    z = math.sqrt(alpha) * z + math.sqrt(1 - alpha) * noise.randn(C, H, W)
    z = z.detach().requires_grad_(True)
    optim = torch.optim.LBFGS([z], max_iter=lbfgs_iter, history_size=100, line_search_fn="strong_wolfe")
    for _ in range(max_iter):
        def closure():
            optim.zero_grad()
            loss = (torch.sum((op.A(forward_flow(theirs, z, steps_euler)) - y_net) ** 2, dim=(1, 2, 3))
                    + lmbda * reg(z, d)).sum()
            loss.backward()
            return loss
        optim.step(closure)
    with torch.no_grad():
        restored = forward_flow(theirs, z.detach(), steps_euler)

    per_solve = 2 * (steps_euler - 1)  # midpoint: two calls per step
    assert len(theirs.calls) // per_solve - 2 >= 2 * max_iter  # inversion, final solve, the closures
    assert_same_calls(ours, theirs)
    torch.testing.assert_close(res.x, to_ops(restored), rtol=0, atol=1e-5)
    torch.testing.assert_close(res.info["z_norm"], z.detach().reshape(1, -1).norm(dim=1), rtol=0, atol=1e-5)


def test_one_evaluation_of_the_default_objective():
    """The default solver's loss and gradient at z (checkpointed ODE) equal the reference closure's."""
    net, op, problem, y_net = _setup(3, sigma=0.0)
    ours, theirs = Recorder(net), Recorder(net)
    prior = priors.from_flow(ours, noise_at_zero=True, data_range=(-1, 1))
    solver = DFlow(ode_steps=3, lam=0.05)
    assert solver.checkpoint and solver.optimizer == "batch"
    z0 = torch.randn(1, C, H, W, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    z = z0.clone().requires_grad_(True)
    loss, _ = solver.objective(problem, prior, z)
    forward_calls = len(ours.calls)
    (g,) = torch.autograd.grad(loss.sum(), z)

    zr = z0.clone().requires_grad_(True)
    ref = torch.sum((op.A(forward_flow(theirs, zr, 4)) - y_net) ** 2, dim=(1, 2, 3)) + 0.05 * reg(zr, C * H * W)
    ref.sum().backward()

    assert forward_calls == len(theirs.calls) == 6 and len(ours.calls) == 12  # checkpoint recomputes
    ours.calls = ours.calls[:forward_calls]
    assert_same_calls(ours, theirs)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(g, zr.grad, rtol=0, atol=1e-8)
