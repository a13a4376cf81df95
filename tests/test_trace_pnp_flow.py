"""Trace equivalence of pnp_flow with the reference PnP-Flow loop.

Transcribed from annegnx/PnP-Flow, ``pnpflow/methods/pnp_flow.py``, ``PNP_FLOW.solve_ip`` (Martin et
al. 2025, Alg. 1), in its own conventions: images in [-1, 1], a torchcfm velocity network
``model(x, t)`` with noise at t = 0, start x = H^T 1, lr_pnp = sigma^2 lr, gamma_style
"alpha_1_minus_t" (lr_t = lr_pnp (1 - t)^alpha), t = n / N for n = 0..N-1, z = x - lr_t H^T (H x - y) /
sigma^2, then ``num_samples`` draws of z~ = t z + (1 - t) eps, each denoised by z~ + (1 - t) v(z~, t),
averaged.
"""

import pytest
import torch
from trace_utils import SCALE, SHIFT, NoiseStream, Recorder, assert_same_calls, tiny_net, to_ops

import invsolve
from invsolve import operators, priors

C, H, W = 3, 8, 8


def reference(net, op, y, sigma, steps, lr, alpha, num_samples, noise):
    """The reference loop in [-1, 1] units; returns (x in network units, recorder)."""
    rec = Recorder(net)
    y_net = SCALE * y + SHIFT * op.A(torch.ones(1, C, H, W, dtype=torch.float64))
    s_net = SCALE * sigma
    lr_pnp = s_net**2 * lr
    delta = 1 / steps
    x = op.A_adjoint(torch.ones_like(y_net))  # the reference's start (erased at t = 0)
    with torch.no_grad():
        for it in range(steps):
            t1 = torch.full((1,), delta * it, dtype=torch.float64)
            lr_t = lr_pnp * (1 - t1.view(-1, 1, 1, 1)) ** alpha
            z = x - lr_t * op.A_adjoint(op.A(x) - y_net) / s_net**2
            x_new = torch.zeros_like(x)
            for _ in range(num_samples):
                z_tilde = t1.view(-1, 1, 1, 1) * z + noise.randn(C, H, W) * (1 - t1.view(-1, 1, 1, 1))
                x_new += z_tilde + (1 - t1.view(-1, 1, 1, 1)) * rec(z_tilde, t1)
            x = x_new / num_samples
    return x, rec


def _run(task, normalize, **kw):
    net = tiny_net(C, seed=1)
    ours = Recorder(net)
    prior = priors.from_flow(ours, noise_at_zero=True, data_range=(-1, 1))
    op = operators.build(task, img_size=(C, H, W), noise_sigma=0.025, **kw).to(torch.float64)
    x = torch.rand(1, C, H, W, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    problem = invsolve.Problem.simulate(op, x, seed=0)
    steps, lr, alpha, samples = 6, 1.0, 0.3, 2
    res = invsolve.solve(problem, prior, "pnp_flow", steps=steps, lr=lr, alpha=alpha, samples=samples,
                         normalize=normalize, data_step="gradient", seed=7)
    if normalize == "lipschitz":  # the paper's step divided by ||A||^2, here from the dense matrix
        eye = torch.eye(C * H * W, dtype=torch.float64).reshape(-1, C, H, W)
        a = torch.stack([op.A(e[None]).reshape(-1) for e in eye], 1)
        lr = lr / torch.linalg.matrix_norm(a, 2) ** 2
    x_ref, theirs = reference(net, op, problem.y, 0.025, steps, lr, alpha, samples, NoiseStream(7, 1))
    assert len(theirs.calls) == steps * samples == res.nfe
    assert_same_calls(ours, theirs)
    torch.testing.assert_close(res.x, to_ops(x_ref), rtol=0, atol=1e-5)
    return res


@pytest.mark.parametrize("task, kw", [("inpaint_random", {"missing": 0.5}),
                                      ("blur_gauss", {"kernel_size": 5, "std": 1.0})])
def test_published_form(task, kw):
    """normalize="none": the paper's absolute step, call by call (t_0 = 0 included)."""
    _run(task, "none", **kw)


def test_normalised_gradient_step_is_the_paper_step_over_the_operator_norm():
    """sr4 (bicubic, ||A||^2 well below 1): data_step="gradient" with the default normalisation
    equals the reference run with lr / ||A||^2 (the default data step is the prox)."""
    res = _run("sr4", "lipschitz")
    assert 0 < float(res.info["op_norm2"]) < 0.5
