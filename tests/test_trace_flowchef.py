"""Trace equivalence of flowchef with the reference FlowChef loop.

Transcribed from FlowChef/FlowChef, ``inverseproblems/pixel_models/rfpp/
generate_inverseproblems_flowchef.py``, ``sample_ode_generative`` with ``--solver euler --sampler new``
(the published runs of ``inverseproblems_flowchef.sh``), in its own conventions: images in [-1, 1], a
rectified-flow velocity network ``model(z, t)`` with data at t = 0 (v = noise - data), z = (1 - 1e-5)
eps, times 1 - 1e-5, (N - 1) / N, ..., 1 / N, 0; at each step vt = model(z, t), and before all but the
last Euler step z -= gradient_scale * grad_z mean((A(z - t vt) - y)^2 * mask) with vt held fixed; then
z += (t_next - t) vt.

The network is either trained in that convention (``from_flow(..., noise_at_zero=False)``) or in the
torchcfm one (noise at t = 0, v = data - noise), which the reference would call as
model(z, t) = -net(z, 1 - t): invsolve runs on the prior's own path in both cases.
"""

import pytest
import torch
from trace_utils import SCALE, SHIFT, NoiseStream, Recorder, assert_same_calls, tiny_net, to_ops

import invsolve
from invsolve import operators, priors

C, H, W = 3, 8, 8


def reference(model, op, y, steps, gradient_scale, noise):
    """The reference loop in [-1, 1] units (noiseless operator in the cost); returns x (network units)."""
    y_net = SCALE * y + SHIFT * op.A(torch.ones(1, C, H, W, dtype=torch.float64))
    z = noise.randn(C, H, W) * (1 - 1e-5)
    ts = [i / steps for i in reversed(range(1, steps + 1))] + [0]
    ts[0] = 1 - 1e-5
    mask = torch.ones_like(y_net)  # get_mask: ones, or 1 off the box, where A already gives 0
    with torch.no_grad():
        for i in range(len(ts) - 1):
            t = torch.full((1,), ts[i], dtype=torch.float64)
            dt = ts[i + 1] - ts[i]
            vt = model(z, t)
            if i < steps - 1:
                with torch.enable_grad():
                    z = z.detach().requires_grad_()
                    z_h = z - t[0] * vt
                    loss = torch.mean(torch.nn.functional.mse_loss(op.A(z_h), y_net, reduction="none") * mask)
                    grads = torch.autograd.grad(loss, z)[0]
                    z = z.detach() - gradient_scale * grads
            z = z.detach().clone() + vt * dt
    return z


def _problem(task, kw):
    op = operators.build(task, img_size=(C, H, W), noise_sigma=0.01, **kw).to(torch.float64)
    x = torch.rand(1, C, H, W, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return op, invsolve.Problem.simulate(op, x, seed=0)


@pytest.mark.parametrize("noise_at_zero", [False, True])
@pytest.mark.parametrize("task, kw", [("inpaint_box", {}), ("sr4_pool", {})])
def test_published_form(task, kw, noise_at_zero):
    """normalize="mse", step = gradient_scale: the reference loop call by call."""
    net = tiny_net(C, seed=4)
    ours, theirs = Recorder(net), Recorder(net)
    prior = priors.from_flow(ours, noise_at_zero=noise_at_zero, data_range=(-1, 1))
    op, problem = _problem(task, kw)
    steps, gs = 8, 20.0
    res = invsolve.solve(problem, prior, "flowchef", steps=steps, step=gs, normalize="mse", seed=5)
    if noise_at_zero:  # a torchcfm network seen by the rectified-flow code
        model = lambda z, t: -theirs(z, 1 - t)
    else:
        model = theirs
    x = reference(model, op, problem.y, steps, gs, NoiseStream(5, 1))
    assert len(theirs.calls) == steps == res.nfe
    assert_same_calls(ours, theirs)
    torch.testing.assert_close(res.x, to_ops(x), rtol=0, atol=1e-5)


def test_default_step_is_the_reference_step_rescaled():
    """The default (step / ||A||^2 on A^T (A x0_hat - y)) is the reference with gradient_scale =
    step M / (2 ||A||^2), M the number of measured values."""
    net = tiny_net(C, seed=6)
    ours, theirs = Recorder(net), Recorder(net)
    prior = priors.from_flow(ours, noise_at_zero=False, data_range=(-1, 1))
    op, problem = _problem("sr4", {})
    steps, step = 6, 0.7
    res = invsolve.solve(problem, prior, "flowchef", steps=steps, step=step, seed=2)
    eye = torch.eye(C * H * W, dtype=torch.float64).reshape(-1, C, H, W)
    a = torch.stack([op.A(e[None]).reshape(-1) for e in eye], 1)
    gs = step * a.shape[0] / (2 * torch.linalg.matrix_norm(a, 2) ** 2)
    x = reference(theirs, op, problem.y, steps, gs, NoiseStream(2, 1))
    assert_same_calls(ours, theirs)
    torch.testing.assert_close(res.x, to_ops(x), rtol=0, atol=1e-5)
