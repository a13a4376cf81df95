"""Trace equivalence of invsolve's DiffPIR with the official sampling loop.

The transcription below follows yuanzhi-zhu/DiffPIR in its own conventions: main_ddpir_deblur.py,
main_ddpir_sisr.py and main_ddpir_inpainting.py (the ``test_rho`` loop with generate_mode
"DiffPIR", model_output_type "pred_xstart", sub_1_analytic, iter_num_U = 1, skip_type "quad"),
utils/utils_model.py (``model_fn`` -> guided diffusion ``p_sample(clip_denoised=True)``'s
"pred_xstart", ``find_nearest``) and utils/utils_sisr.py (``pre_calculate`` / ``data_solution``:
the closed-form data step with an FFT, Zhao et al. 2016). Images in [-1, 1], integer DDPM steps,
rho_t = lambda sigma^2 / sigma_ks[t]^2 with sigma = max(0.001, noise_level_img) in [0, 1] units
and sigma_ks in [-1, 1] units, the three official starts, and the chain state at t = 0 as the
output. Written from reading the code, not copied.

Both run on the same tiny float64 eps-network and the same noise draws (``NoiseStream``, consumed in
the order invsolve draws: the start, then per step [eta term if eta > 0], zeta term).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from deepinv.physics import BlurFFT
from trace_utils import NoiseStream, Recorder, assert_same_calls, tiny_net, to_ops

import invsolve
from invsolve import operators, paths, priors

N = 1000


def schedule():
    betas = torch.linspace(0.1 / 1000, 20 / 1000, N, dtype=torch.float64)
    alphas = 1.0 - betas
    abar = torch.cumprod(alphas, 0)
    sqrt_ab, sqrt_1m = abar.sqrt(), (1 - abar).sqrt()
    return betas, sqrt_ab, sqrt_1m, sqrt_1m / sqrt_ab  # reduced_alpha_cumprod: sigma on the image


def find_nearest(array, value):
    return int((array - value).abs().argmin())


def p2o(psf, shape):
    """Point-spread function -> optical transfer function, centred (utils_sisr.p2o)."""
    otf = torch.zeros(psf.shape[:-2] + shape, dtype=torch.float64)
    otf[..., : psf.shape[-2], : psf.shape[-1]] = psf
    for axis, size in enumerate(psf.shape[-2:]):
        otf = torch.roll(otf, -(size // 2), dims=axis + 2)
    return torch.fft.fftn(otf, dim=(-2, -1))


def block_mean(a, sf):
    """Mean over the sf x sf tiles of the frequency grid (utils_sisr.splits then mean)."""
    n, c, h, w = a.shape
    return a.reshape(n, c, sf, h // sf, sf, w // sf).mean(dim=(2, 4))


def pre_calculate(y, k, sf):
    h, w = y.shape[-2:]
    fb = p2o(k, (h * sf, w * sf))
    up = torch.zeros(y.shape[:2] + (h * sf, w * sf), dtype=y.dtype)
    up[..., ::sf, ::sf] = y
    return fb, fb.conj(), fb.abs() ** 2, fb.conj() * torch.fft.fftn(up, dim=(-2, -1))


def data_solution(x, fb, fbc, f2b, fbfy, alpha, sf):
    """argmin ||y - S(k * x)||^2 + alpha ||x - x_in||^2, circular, S = keep every sf-th pixel."""
    fr = fbfy + torch.fft.fftn(alpha * x, dim=(-2, -1))
    fbr = block_mean(fb * fr, sf)
    inv_w = block_mean(f2b, sf)
    fx = (fr - fbc * (fbr / (inv_w + alpha)).repeat(1, 1, sf, sf)) / alpha
    return torch.fft.ifftn(fx, dim=(-2, -1)).real


def official_diffpir(net, task, y, noise, *, iter_num, lambda_, zeta, noise_level_img, eta=0.0,
                     kernel=None, sf=1, mask=None, start="noisy"):
    """The official loop; y in [0, 1] units (the scripts' img_L); returns x_0 = x / 2 + 0.5."""
    betas, sqrt_ab, sqrt_1m, reduced = schedule()
    sigma = max(0.001, noise_level_img)
    sigmas = reduced.flip(0)  # sigmas[i] = reduced[N - 1 - i]
    rhos = lambda_ * sigma**2 / reduced**2
    t_start = N - 1
    c, h, w = (y.shape[1], y.shape[2] * sf, y.shape[3] * sf)
    if task == "inpaint":
        y_img = 2 * (y * mask) - 1  # main_ddpir_inpainting.py keeps y in [-1, 1]
        x_init = y_img
    elif task == "sr":
        fb, fbc, f2b, fbfy = pre_calculate(y, kernel, sf)
        x_init = 2 * F.interpolate(y, size=(h, w), mode="bicubic", align_corners=False) - 1
    else:
        fb, fbc, f2b, fbfy = pre_calculate(y, kernel, sf)
        x_init = 2 * y - 1
    z = noise.randn(c, h, w)
    if start == "noisy":  # deblur / inpainting scripts: y taken as x at t_y, diffused to t_start
        t_y = find_nearest(reduced, 2 * noise_level_img)
        sae = sqrt_ab[t_start] / sqrt_ab[t_y]
        x = sae * x_init + torch.sqrt(sqrt_1m[t_start] ** 2 - sae**2 * sqrt_1m[t_y] ** 2) * z
    else:  # sisr script
        x = sqrt_ab[t_start] * x_init + sqrt_1m[t_start] * z
    # skip_type "quad": np.sqrt(np.linspace(0, N**2, iter_num)) truncated, last one minus 1
    seq = [int(math.sqrt(i * (N**2 / (iter_num - 1)))) if i < iter_num - 1 else N
           for i in range(iter_num)]
    seq[-1] -= 1
    for i in range(len(seq)):
        t_i = find_nearest(reduced, sigmas[seq[i]])
        eps_net = net(x, torch.tensor([float(t_i)], dtype=torch.float64))
        x0 = (x - sqrt_1m[t_i] * eps_net) / sqrt_ab[t_i]  # guided diffusion pred_xstart
        x0 = x0.clamp(-1, 1)  # clip_denoised=True
        if seq[i] != seq[-1]:
            tau = rhos[t_i]
            if task == "inpaint":
                x0 = (mask * y_img + tau * x0) / (mask + tau)
            else:
                x0 = data_solution(x0 / 2 + 0.5, fb, fbc, f2b, fbfy, tau, sf) * 2 - 1
            t_im1 = find_nearest(reduced, sigmas[seq[i + 1]])
            eps = (x - sqrt_ab[t_i] * x0) / sqrt_1m[t_i]
            eta_sigma = eta * sqrt_1m[t_im1] / sqrt_1m[t_i] * torch.sqrt(betas[t_i])
            z_eta = noise.randn(c, h, w) if eta > 0 else 0.0  # official: drawn even at eta = 0
            z_zeta = noise.randn(c, h, w)
            x = (sqrt_ab[t_im1] * x0
                 + math.sqrt(1 - zeta) * (torch.sqrt(sqrt_1m[t_im1] ** 2 - eta_sigma**2) * eps
                                          + eta_sigma * z_eta)
                 + math.sqrt(zeta) * sqrt_1m[t_im1] * z_zeta)
    return x / 2 + 0.5, x0


def build(name, **kw):
    """A project operator with float64 buffers. deepinv's BlurFFT keeps |FFT(k)| and its phase in
    the kernel's dtype (float32 here): refreshed from a float64 kernel, since DiffPIR's first data
    steps (rho_t ~ 1e-6) divide by |FFT(k)|^2 + rho_t and would amplify float32 rounding to ~1e-5."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        op = operators.build(name, **kw)
    finally:
        torch.set_default_dtype(default)
    if isinstance(op, BlurFFT):
        op.update_parameters(filter=op.filter.to(torch.float64))
    return op


CASES = {  # name: (operator, its arguments), invsolve hyperparameters, the official script's
    "deblur": (("blur_gauss", {"img_size": (3, 8, 8), "kernel_size": 5, "std": 1.0,
                               "noise_sigma": 0.05}),
               {"lam": 7.0, "zeta": 0.3}, {"lambda_": 7.0, "zeta": 0.3}),
    "sr": (("sr4", {"img_size": (3, 16, 16), "noise_sigma": 0.05}),
           {"lam": 6.0, "zeta": 0.25, "init": "measurement"},
           {"lambda_": 6.0, "zeta": 0.25, "start": "plain", "sf": 4}),
    "inpaint": (("inpaint_random", {"img_size": (3, 8, 8), "missing": 0.5, "noise_sigma": 0.0}),
                {"lam": 1.0, "zeta": 1.0, "noise_floor": 0.001}, {"lambda_": 1.0, "zeta": 1.0}),
    "deblur_eta": (("blur_gauss", {"img_size": (3, 8, 8), "kernel_size": 5, "std": 1.0,
                                   "noise_sigma": 0.02}),
                   {"lam": 7.0, "zeta": 0.3, "eta": 0.5},
                   {"lambda_": 7.0, "zeta": 0.3, "eta": 0.5}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_diffpir_matches_the_official_loop(case):
    (name, kw), hp, official = CASES[case]
    op = build(name, **kw)
    task = case.split("_")[0]
    net = tiny_net()
    ours = Recorder(net)
    prior = priors.NetworkPrior(ours, "eps", paths.VPDiscrete(), data_range=(-1, 1))
    x = torch.rand(1, *kw["img_size"], dtype=torch.float64)
    problem = invsolve.Problem.simulate(op, x, seed=0)
    steps, seed = 10, 3
    res = invsolve.solve(problem, prior, "diffpir", steps=steps, noiseless_projection=False, seed=seed, **hp)
    theirs = Recorder(net)
    if task in ("deblur", "sr"):
        extra = {"kernel": op.filter.to(torch.float64)}
    else:
        extra = {"mask": op.mask}
    x_out, _ = official_diffpir(theirs, task, problem.y, NoiseStream(seed, 1), iter_num=steps,
                                noise_level_img=kw["noise_sigma"], **extra, **official)
    assert_same_calls(ours, theirs)
    assert res.nfe == steps
    torch.testing.assert_close(res.x, x_out, rtol=0, atol=1e-5)


def test_diffpir_final_x0_and_noise_start():
    """``final="x0"`` returns the last clipped estimate; ``init="noise"`` starts at
    x_T ~ N(0, I)."""
    op = build("inpaint_random", img_size=(3, 8, 8), missing=0.5, noise_sigma=0.0)
    net = tiny_net()
    ours = Recorder(net)
    prior = priors.NetworkPrior(ours, "eps", paths.VPDiscrete(), data_range=(-1, 1))
    problem = invsolve.Problem.simulate(op, torch.rand(1, 3, 8, 8, dtype=torch.float64), seed=0)
    res = invsolve.solve(problem, prior, "diffpir", steps=6, noiseless_projection=False, seed=1, final="x0", init="noise")
    first_input = ours.calls[0][0]
    torch.testing.assert_close(first_input, NoiseStream(1, 1).randn(3, 8, 8))  # x_T^net = z
    last_x0 = to_ops((ours.calls[-1][0] - (1 - 0.9999) ** 0.5 * ours.calls[-1][2]) / 0.9999**0.5)
    torch.testing.assert_close(res.x, last_x0.clamp(0, 1), rtol=0, atol=1e-10)


def test_quad_spacing_is_diffpirs():
    from invsolve.solvers.schedules import respace

    assert respace(1000, 10, "quad") == [0, 57, 118, 183, 254, 333, 422, 528, 666, 999]
    assert respace(1000, 2, "quad") == [0, 999]
    assert len(respace(1000, 800, "quad")) == 800


def test_diffpir_noiseless_blur_stays_finite():
    """sigma_y = 0 and the default noise_floor = 0: every data step is x0 + A^+ (y - A x0) with
    deepinv's floored pseudo-inverse; finite on the DPS-size blur (61x61, std 3), whose smallest
    singular values are ~1e-20, as is the official rho_t > 0 (the preset)."""
    op = build("blur_gauss", img_size=(3, 64, 64), noise_sigma=0.0)
    prior = priors.NetworkPrior(tiny_net(), "eps", paths.VPDiscrete(), data_range=(-1, 1))
    problem = invsolve.Problem.simulate(op, torch.rand(1, 3, 64, 64, dtype=torch.float64), seed=0)
    for hp in ({}, {"preset": "paper"}):  # the projection; the official rho_t > 0
        res = invsolve.solve(problem, prior, "diffpir", steps=5, seed=0, **hp)
        assert torch.isfinite(res.x).all() and float(res.x.abs().max()) < 5  # chain state at t = 0
