"""DDRM against a transcription of the official loop (trace equivalence, issue 11).

The transcription follows bahjat-kawar/ddrm, functions/denoising.py ``efficient_generalized_steps`` and
runners/diffusion.py ``sample_image`` in their own conventions: data in [-1, 1], the measurement y_0 =
H x + 2 sigma_0 noise in those units, DDPM's linear 1000-step schedule (``compute_alpha`` indexes
cumprod(1 - [0, betas]) at t + 1, so t = -1 is abar = 1), seq = range(0, 1000, 1000 // steps) visited
from the noisiest with seq_next = [-1] + seq[:-1], x_T = V(init_y) / largest_sigma, etaA = etaC = eta.
Its ``H_funcs`` (V, Vt, U, Ut, singulars with ZERO) is built here from the deepinv operator's SVD, in
deepinv's spectral layout instead of the official flattened one. The official zeroing threshold for a
2-D FFT blur is taken as the relative 1e-3 of invsolve (the official per-1-D-factor 3e-2 has no 2-D FFT
counterpart). Noise: invsolve's per-sample draws, mapped by Vt where the official code draws in the
spectral space (one draw per step serves its three branches, which touch disjoint coordinates).
"""

import pytest
import torch
from trace_utils import SCALE, SHIFT, NoiseStream, Recorder, assert_same_calls, tiny_net, to_ops

import invsolve
from invsolve import operators, paths, priors
from invsolve.evaluation.metrics import psnr
from invsolve.priors.datasets import natural_rgb_images
from invsolve.solvers.linalg import pinv, singular_values

N_TRAIN = 1000


class HFuncs:
    """The official ``H_functions`` interface over a deepinv DecomposablePhysics (float64)."""

    def __init__(self, op, zero: float):
        self.op = op
        raw = op.mask.abs()
        self.in_list = raw > 0  # coordinates the official singulars vector holds
        self.singulars = raw.masked_fill(raw < zero * raw.max(), 0.0)  # ZERO

    def V(self, v):
        return self.op.V(v)

    def Vt(self, x):
        return self.op.V_adjoint(x)

    def Ut(self, y):
        return self.op.U_adjoint(y)


def compute_alpha(b, t: int) -> torch.Tensor:
    beta = torch.cat([torch.zeros(1, dtype=b.dtype), b])
    return (1 - beta).cumprod(dim=0)[t + 1]


def official_ddrm(model, H: HFuncs, y_0, sigma_0, steps, eta, eta_b, noise, shape):
    """efficient_generalized_steps(x, seq, model, b, H_funcs, y_0, sigma_0, etaB, etaA=eta, etaC=eta)."""
    b = torch.linspace(1e-4, 0.02, N_TRAIN, dtype=torch.float64)
    skip = N_TRAIN // steps
    seq = list(range(0, N_TRAIN, skip))
    sing, in_list = H.singulars, H.in_list
    nz = in_list & (sing > 0)
    U_t_y = H.Ut(y_0)
    Sig_inv_U_t_y = torch.where(nz, U_t_y / torch.where(nz, sing, 1.0), 0.0)

    # x_T as in the paper: p(x_T | x_0, y)
    x = noise.randn(*shape)  # runners/diffusion.py: x = torch.randn(...), used as the spectral noise
    a_T = compute_alpha(b, seq[-1])
    largest_sigma = (1 - a_T).sqrt() / a_T.sqrt()
    large = in_list & (sing * largest_sigma > sigma_0)
    inv_sing_and_zero = torch.where(large, sigma_0 / torch.where(large, sing, 1.0), 0.0)
    init_y = torch.where(large, U_t_y / torch.where(large, sing, 1.0), 0.0)
    remaining_s = (largest_sigma**2 - inv_sing_and_zero**2).clamp_min(0.0).sqrt()
    init_y = init_y + remaining_s * H.Vt(x)
    init_y = init_y / largest_sigma
    x = H.V(init_y)

    seq_next = [-1] + seq[:-1]
    for i, j in zip(reversed(seq), reversed(seq_next)):
        at, at_next = compute_alpha(b, i), compute_alpha(b, j)
        et = model(x, torch.tensor([float(i)] * x.shape[0], dtype=torch.float64))
        x0_t = (x - et * (1 - at).sqrt()) / at.sqrt()
        sigma_next = (1 - at_next).sqrt() / at_next.sqrt()
        V_t_x0 = H.Vt(x0_t)
        SVt_x0 = V_t_x0 * torch.where(in_list, sing, 0.0)
        cond_before = in_list & (sing * sigma_next > sigma_0)
        cond_after = in_list & (sing * sigma_next < sigma_0)
        std_nextC = sigma_next * eta
        sigma_tilde_nextC = torch.sqrt(sigma_next**2 - std_nextC**2)
        std_nextA = sigma_next * eta
        sigma_tilde_nextA = torch.sqrt(sigma_next**2 - std_nextA**2)
        safe = torch.where(cond_before, sing, 1.0)
        diff_sigma_t_nextB = torch.sqrt((sigma_next**2 - sigma_0**2 / safe**2 * eta_b**2).clamp_min(0))
        z = H.Vt(noise.randn(*shape))
        # missing pixels
        nxt = V_t_x0 + sigma_tilde_nextC * H.Vt(et) + std_nextC * z
        # less noisy than y (after)
        if sigma_0 > 0:
            after = V_t_x0 + sigma_tilde_nextA * (U_t_y - SVt_x0) / sigma_0 + std_nextA * z
            nxt = torch.where(cond_after, after, nxt)
        # noisier than y (before)
        before = Sig_inv_U_t_y * eta_b + (1 - eta_b) * V_t_x0 + diff_sigma_t_nextB * z
        nxt = torch.where(cond_before, before, nxt)
        x = at_next.sqrt() * H.V(nxt)
    return x


def _problem(name, sigma, shape=(3, 16, 16), **kw):
    # .double(), not .to(float64): the latter would also cast BlurFFT's complex phase to real
    op = operators.build(name, img_size=shape, noise_sigma=sigma, **kw).double()
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return op, invsolve.Problem.simulate(op, x, seed=0)


CASES = [
    ("inpaint_random", {"missing": 0.5}, 0.05),
    ("inpaint_random", {"missing": 0.5}, 0.0),
    ("blur_gauss", {"kernel_size": 5, "std": 1.0}, 0.0),
    ("blur_gauss", {"kernel_size": 5, "std": 1.0}, 0.02),
]


def _run_both(name, kw, sigma, **hp):
    net = tiny_net()
    op, problem = _problem(name, sigma, **kw)
    ours = Recorder(net)
    prior = priors.NetworkPrior(ours, "eps", paths.VPDiscrete(), data_range=(-1, 1))
    steps, eta, eta_b = 10, 0.85, 1.0
    res = invsolve.solve(problem, prior, "ddrm", steps=steps, eta=eta, eta_b=eta_b, noiseless_projection=False, seed=[3, 4], **hp)
    theirs = Recorder(net)
    y_0 = SCALE * problem.y + SHIFT * op.A(torch.ones_like(problem.x_true))  # the [-1, 1] measurement
    out = official_ddrm(theirs, HFuncs(op, 1e-3), y_0, SCALE * sigma, steps, eta, eta_b,
                        NoiseStream([3, 4], 2), problem.x_shape)
    return op, problem, res, ours, theirs, to_ops(out)


@pytest.mark.parametrize(("name", "kw", "sigma"), CASES)
def test_ddrm_official_branching_is_the_official_loop(name, kw, sigma):
    op, _, res, ours, theirs, final = _run_both(name, kw, sigma, branching="official")
    if name == "blur_gauss":  # the floor is exercised: some singular values fall below 1e-3 of the largest
        assert (op.mask.abs() < 1e-3 * op.mask.abs().max()).any()
    assert_same_calls(ours, theirs)
    torch.testing.assert_close(res.x, final, atol=1e-5, rtol=0)


def test_ddrm_default_is_the_official_loop_on_noisy_inpainting():
    _, _, res, ours, theirs, final = _run_both("inpaint_random", {"missing": 0.5}, 0.05)
    assert_same_calls(ours, theirs)
    torch.testing.assert_close(res.x, final, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("name", "kw"), [CASES[1][:2], CASES[2][:2]])
def test_ddrm_default_noiseless_ends_on_the_data(name, kw):
    """sigma_y = 0: the network sees the official inputs at every step; the last step's tie (sigma_s =
    sigma_y = 0) takes y_bar on observed coordinates (the paper's Eq. 8, eta_b = 1), where the
    official code keeps the network's x0; unobserved (and floored) coordinates agree."""
    op, problem, res, ours, theirs, final = _run_both(name, kw, 0.0)
    assert_same_calls(ours, theirs)
    s = singular_values(op)
    seen = s > 0
    y_bar = torch.where(seen, op.U_adjoint(problem.y) / torch.where(seen, s, 1), 0)
    expected = op.V(torch.where(seen, y_bar, op.V_adjoint(final)))
    torch.testing.assert_close(res.x, expected, atol=1e-5, rtol=0)


def test_ddrm_timesteps_are_the_official_seq():
    net = tiny_net()
    ours = Recorder(net)
    prior = priors.NetworkPrior(ours, "eps", paths.VPDiscrete(), data_range=(-1, 1))
    _, problem = _problem("inpaint_random", 0.05, missing=0.5)
    invsolve.solve(problem, prior, "ddrm", steps=20, seed=0)
    assert [float(t[0]) for _, t, _ in ours.calls] == [float(t) for t in range(950, -1, -50)]


def test_ddrm_noiseless_deblurring_with_the_shipped_prior_stays_in_range():
    """Issue 11: noiseless blur_gauss returned values in [-342, 335] before the singular-value floor
    (divisions by singular values near 1e-20). Now: finite, inside [0, 1] up to a small margin, and
    better than the floored pseudo-inverse."""
    images, _ = natural_rgb_images("test")
    x = images[0][None, :, 150:182, 200:232].float()
    op = operators.build("blur_gauss", img_size=(3, 32, 32), kernel_size=31, std=3.0, noise_sigma=0.0)
    problem = invsolve.Problem.simulate(op, x, seed=0)
    out = invsolve.solve(problem, priors.load("natural-rgb"), "ddrm", steps=20, seed=0).x
    assert torch.isfinite(out).all()
    assert -0.1 < float(out.min()) and float(out.max()) < 1.1
    assert psnr(out.clamp(0, 1), x) > psnr(pinv(op, problem.y).clamp(0, 1), x)
