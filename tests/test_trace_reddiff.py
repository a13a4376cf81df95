"""Trace equivalence of invsolve's RED-diff with the official sampling loop.

The transcription below follows NVlabs/RED-diff in its own conventions: algos/reddiff.py
(``REDDIFF.sample`` and ``initialize``: mu_0 = H_pinv(y_0), Adam(lr, betas (0.9, 0.99)), per step
x0_pred = mu + sigma_x0 z0, x_t = sqrt(abar_t) x0_pred + sqrt(1 - abar_t) z, loss = w_t
mean(sg(eps_theta - z) x0_pred) + v_t mean((y_0 - H x0_pred)^2) / 2 averaged over every element,
w_t = grad_term_weight * weight(sqrt(1 - abar_t) / sqrt(abar_t)); the output x0_pred of the last
step), utils/functions.py (``get_timesteps``: range(end, start, (start - end) // num_steps),
visited in reverse), models/diffusion.py (``alpha(t) = abar_t`` with alpha(-1) = 1) and main.py
(y_0 = H(2 x - 1) + 2 sigma_y noise, images in [-1, 1]). Written from reading the code, not copied.

Both run on the same tiny float64 eps-network and the same noise draws (``NoiseStream``, consumed
in invsolve's order: per step [z0 if sigma_x0 > 0], z). A batch of one: the official loss averages
over the batch, invsolve per sample (see the solver's deviations).
"""

from __future__ import annotations

import pytest
import torch
from deepinv.physics import BlurFFT
from trace_utils import NoiseStream, Recorder, assert_same_calls, tiny_net, to_ops

import invsolve
from invsolve import operators, paths, priors

WEIGHT = {"linear": lambda r: r, "sqrt": torch.sqrt}


def official_reddiff(net, y_0, H, H_pinv, noise, shape, *, num_steps, lr, grad_term_weight,
                     obs_weight=1.0, sigma_x0=0.0, denoise_term_weight="linear"):
    """The official loop in [-1, 1] units; returns (x0_pred, mu) as ``sample`` does."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - torch.cat([torch.zeros(1, dtype=torch.float64), betas]), 0)

    def alpha(t):
        return abar[t + 1]

    skip = 1000 // num_steps
    ts = list(range(0, 1000, skip))
    mu = H_pinv(y_0).detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    for ti in reversed(ts):
        alpha_t = alpha(ti)
        noise_x0 = noise.randn(*shape) if sigma_x0 > 0 else 0.0  # drawn anyway by the official
        noise_xt = noise.randn(*shape)
        x0_pred = mu + sigma_x0 * noise_x0
        xt = alpha_t.sqrt() * x0_pred + (1 - alpha_t).sqrt() * noise_xt
        et = net(xt, torch.tensor([float(ti)], dtype=torch.float64)).detach()
        e_obs = y_0 - H(x0_pred)
        loss_obs = (e_obs**2).mean() / 2
        loss_noise = torch.mul((et - noise_xt).detach(), x0_pred).mean()
        snr_inv = WEIGHT[denoise_term_weight]((1 - alpha_t).sqrt() / alpha_t.sqrt())
        loss = grad_term_weight * snr_inv * loss_noise + obs_weight * loss_obs
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return x0_pred.detach(), mu.detach()


def fft_blur(kernel, hw):
    """Circular convolution with a centred kernel by FFT, and its exact inverse (all |K| > 0)."""
    otf = torch.zeros(kernel.shape[:-2] + hw, dtype=torch.float64)
    otf[..., : kernel.shape[-2], : kernel.shape[-1]] = kernel
    for axis, size in enumerate(kernel.shape[-2:]):
        otf = torch.roll(otf, -(size // 2), dims=axis + 2)
    fk = torch.fft.fftn(otf, dim=(-2, -1))

    def H(x):
        return torch.fft.ifftn(fk * torch.fft.fftn(x, dim=(-2, -1)), dim=(-2, -1)).real

    def H_pinv(y):
        return torch.fft.ifftn(torch.fft.fftn(y, dim=(-2, -1)) / fk, dim=(-2, -1)).real

    return H, H_pinv, fk


def build(name, **kw):
    """A project operator with float64 buffers (deepinv's BlurFFT keeps its FFT in the kernel's
    dtype)."""
    op = operators.build(name, **kw)
    if isinstance(op, BlurFFT):
        op.update_parameters(filter=op.filter.to(torch.float64))
    return op


CASES = {  # name: operator and its arguments, invsolve hyperparameters, the official config's
    "inpaint": (("inpaint_random", {"img_size": (3, 8, 8), "missing": 0.5, "noise_sigma": 0.0}),
                {"lam": 0.25, "lr": 0.25, "sigma_x0": 1e-4, "lr_schedule": "constant"},
                {"grad_term_weight": 0.25, "lr": 0.25, "sigma_x0": 1e-4}),
    "deblur": (("blur_gauss", {"img_size": (3, 8, 8), "kernel_size": 3, "std": 0.5,
                               "noise_sigma": 0.05}),
               {"lam": 0.25, "lr": 0.5, "lr_schedule": "constant"},
               {"grad_term_weight": 0.25, "lr": 0.5}),
    "deblur_sqrt": (("blur_gauss", {"img_size": (3, 8, 8), "kernel_size": 3, "std": 0.5,
                                    "noise_sigma": 0.02}),
                    {"lam": 1.0, "lr": 0.1, "obs_weight": 0.5, "weight": "sqrt", "final": "mu",
                     "lr_schedule": "constant"},
                    {"grad_term_weight": 1.0, "lr": 0.1, "obs_weight": 0.5,
                     "denoise_term_weight": "sqrt"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_reddiff_matches_the_official_loop(case):
    (name, kw), hp, official = CASES[case]
    op = build(name, **kw)
    net = tiny_net()
    ours = Recorder(net)
    prior = priors.NetworkPrior(ours, "eps", paths.VPDiscrete(), data_range=(-1, 1))
    x = torch.rand(1, *kw["img_size"], dtype=torch.float64)
    problem = invsolve.Problem.simulate(op, x, seed=0)
    steps, seed = 20, 5
    res = invsolve.solve(problem, prior, "reddiff", steps=steps, noiseless_projection=False, seed=seed, **hp)

    theirs = Recorder(net)
    if name == "inpaint_random":
        mask = op.mask.to(torch.float64)

        def H(v):
            return v * mask

        H_pinv = H  # Inpainting2: the mask is its own pseudo-inverse
    else:
        H, H_pinv, fk = fft_blur(op.filter.to(torch.float64), kw["img_size"][1:])
        assert fk.abs().min() > 0.1  # every singular value above both pinv floors: exact inverse
    y_0 = 2 * problem.y - H(torch.ones_like(x))  # = H(2 x - 1) + 2 * noise, main.py's measurement
    x0_pred, mu = official_reddiff(theirs, y_0, H, H_pinv, NoiseStream(seed, 1), kw["img_size"],
                                   num_steps=steps, **official)
    assert_same_calls(ours, theirs)
    assert res.nfe == steps
    expected = mu if hp.get("final") == "mu" else x0_pred
    torch.testing.assert_close(res.x, to_ops(expected), rtol=0, atol=1e-5)


def test_reddiff_adam_step_is_in_network_units():
    """The first Adam step moves each element by lr in network units (lr / 2 on [0, 1] images):
    Adam's first step is lr * g / (|g| + eps), whatever the loss scale (up to eps = 1e-8 against
    gradients of ~1e-5 here)."""
    op = build("inpaint_random", img_size=(3, 8, 8), missing=0.5, noise_sigma=0.0)
    prior = priors.NetworkPrior(tiny_net(), "eps", paths.VPDiscrete(), data_range=(-1, 1))
    problem = invsolve.Problem.simulate(op, torch.rand(1, 3, 8, 8, dtype=torch.float64), seed=0)
    res = invsolve.solve(problem, prior, "reddiff", steps=1, seed=0, lr=0.3, final="mu")
    start = 0.5 + (problem.y - 0.5 * op.mask)  # mu_0: y observed, 0.5 (the network's 0) elsewhere
    step = (res.x - start).abs()
    assert abs(float(step.max()) - 0.15) < 1e-3 and float(step.median()) > 0.14


def test_reddiff_linear_schedule_ends_with_a_zero_step():
    """The default lr_schedule="linear" decays the lr to 0 at the last iteration, so mu after it
    equals the official output x0_pred (mu before it); the paper preset keeps the constant lr."""
    op = build("inpaint_random", img_size=(3, 8, 8), missing=0.5, noise_sigma=0.0)
    prior = priors.NetworkPrior(tiny_net(), "eps", paths.VPDiscrete(), data_range=(-1, 1))
    problem = invsolve.Problem.simulate(op, torch.rand(1, 3, 8, 8, dtype=torch.float64), seed=0)
    a = invsolve.solve(problem, prior, "reddiff", steps=4, seed=0)
    b = invsolve.solve(problem, prior, "reddiff", steps=4, seed=0, final="mu")
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    c = invsolve.solve(problem, prior, "reddiff", preset="paper", steps=4, seed=0, final="mu")
    assert (c.x - a.x).abs().max() > 1e-3
