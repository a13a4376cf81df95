"""PiGDM against a transcription of the official loop (trace equivalence, issue 11).

The authors of PiGDM released no code; the transcription follows the same group's implementation,
NVlabs/RED-diff algos/pgdm.py ``PGDM.sample`` and ``PGDM.initialize`` with its configuration
(_configs/algo/pgdm.yaml: awd = True, cond_awd = False, mcg = False, grad_term_weight), in its own
conventions: data in [-1, 1], y_0 = H x + noise in those units, ``Diffusion.alpha(t)`` = cumprod(1 -
[0, betas])[t + 1] (so s = -1 is abar = 1), ts = range(0, 1000, 1000 // num_steps) (utils/functions.py
``get_timesteps``) with ss = [-1] + ts[:-1], x_T = sqrt(abar_T) H^+ y_0 + sqrt(1 - abar_T) z, and
    x_s = sqrt(abar_s) x0 + c1 z + c2 eps + grad_term_weight sqrt(abar_s) sqrt(abar_t) J^T mat,
mat = H^+ y_0 - H^+ H x0. H and H^+ are built here from the deepinv operator's SVD with singular values
below 1e-3 of the largest zeroed (the official SVD classes' ZERO), and y is made as main.py makes it,
y_0 = H x + noise with that H (invsolve gets the same y). Noise: invsolve's per-sample draws, in the
order pgdm.py makes them (x_T, then one per step). pgdm.py ignores sigma_y; the noisy test checks
invsolve's Eq. 8 extension inside the same loop.
"""

import pytest
import torch
from trace_utils import SCALE, SHIFT, NoiseStream, Recorder, assert_same_calls, tiny_net, to_ops

import invsolve
from invsolve import operators, paths, priors
from invsolve.evaluation.metrics import psnr
from invsolve.priors.datasets import natural_rgb_images
from invsolve.solvers.linalg import pinv

N_TRAIN = 1000


class HFuncs:
    """The official ``H_functions`` over a deepinv DecomposablePhysics: singular values below ZERO (1e-3
    of the largest here) set to 0 in ``H``; ``H_pinv`` divides by the others, leaves U^T v as it is on
    the zeroed ones and 0 outside the singular-value list (RED-diff utils/degredations.py
    ``H_functions.H_pinv``, ``add_zeros``)."""

    def __init__(self, op, zero=1e-3):
        self.op = op
        s = op.mask.abs()
        self.in_list = s > 0  # in the official singulars vector (inpainting's missing pixels are not)
        self.s = s.masked_fill(s < zero * s.max(), 0.0)

    def H(self, x):
        return self.op.U(self.s * self.op.V_adjoint(x))

    def H_pinv(self, y, keep_rest=True):
        t = self.op.U_adjoint(y)
        nz = self.s > 0
        rest = torch.where(self.in_list, t, 0.0) if keep_rest else 0.0  # add_zeros for the rest
        return self.op.V(torch.where(nz, t / torch.where(nz, self.s, 1.0), rest))


def official_pgdm(model, H, y_0, num_steps, eta, weight, noise, shape, sigma_0=None, awd=True):
    """pgdm.py (awd = True by default). ``sigma_0`` (noisy variant, not in pgdm.py): mat = r^2 A^T (r^2 A
    A^T + sigma_0^2 I)^-1 (y_0 - A x0) with r^2 = 1 - abar_t (Eq. 8 times r^2, data variance 1).
    ``weight``: grad_term_weight, or a function of abar_t."""
    betas = torch.cat([torch.zeros(1, dtype=torch.float64), torch.linspace(1e-4, 0.02, N_TRAIN, dtype=torch.float64)])
    alphas = (1 - betas).cumprod(dim=0)

    def alpha(t):
        return alphas[t + 1]

    skip = N_TRAIN // num_steps
    ts = list(range(0, N_TRAIN, skip))
    # initialize
    x_0 = H.H_pinv(y_0, keep_rest=sigma_0 is None)  # noisy variant: the floored pseudo-inverse
    a_T = alpha(ts[-1])
    xt = a_T.sqrt() * x_0 + (1 - a_T).sqrt() * noise.randn(*shape)
    ss = [-1] + ts[:-1]
    for ti, si in zip(reversed(ts), reversed(ss)):
        alpha_t, alpha_s = alpha(ti), alpha(si)
        c1 = ((1 - alpha_t / alpha_s) * (1 - alpha_s) / (1 - alpha_t)).sqrt() * eta
        c2 = ((1 - alpha_s) - c1**2).sqrt()
        xt = xt.clone().requires_grad_(True)
        et = model(xt, torch.tensor([float(ti)] * xt.shape[0], dtype=torch.float64))
        x0_pred = (xt - et * (1 - alpha_t).sqrt()) / alpha_t.sqrt()
        if sigma_0 is None:
            mat = H.H_pinv(y_0) - H.H_pinv(H.H(x0_pred))
        else:
            r2 = 1 - alpha_t
            gain = r2 * H.s / (r2 * H.s**2 + sigma_0**2)
            mat = H.op.V(gain * H.op.U_adjoint(y_0 - H.H(x0_pred)))
        mat_x = (mat.detach() * x0_pred).sum()
        grad_term = torch.autograd.grad(mat_x, xt)[0].detach()
        coeff = alpha_s.sqrt()
        if not awd:
            coeff = coeff - c2 * alpha_t.sqrt() / (1 - alpha_t).sqrt()
        coeff = coeff * alpha_t.sqrt() * (weight(alpha_t) if callable(weight) else weight)
        x0_pred = x0_pred.detach()
        if not awd:
            et = (xt - x0_pred * alpha_t.sqrt()) / (1 - alpha_t).sqrt()
        et = et.detach()
        xt = alpha_s.sqrt() * x0_pred + c1 * noise.randn(*shape) + c2 * et + grad_term * coeff
    return xt.detach()


class GaussianEps(torch.nn.Module):
    """eps(x, t) = sqrt(1 - abar_t) x + 0.1 net(x, t): the exact eps of N(0, I) data plus a random part.
    A bare random eps-network has d x0_hat / d x_t ~ 1 / sqrt(abar_t) (~100 at high noise), which the
    tweedie form's sigma_t^2 / r_t^2 = 1 / abar_t weight turns into a divergence within a few steps."""

    def __init__(self, net):
        super().__init__()
        self.net, self.path = net, paths.VPDiscrete()

    def forward(self, x, t):
        abar = self.path.alpha(t.double()).to(x.dtype) ** 2
        return (1 - abar).sqrt()[:, None, None, None] * x + 0.1 * self.net(x, t)


def _problem(name, sigma, shape=(3, 16, 16), **kw):
    """A problem whose y is made as the official runners make it, y = H x + noise with H's zeroed
    singular values (deepinv's A keeps them: on a floored direction U^T A x = s x, s < 1e-3 s_max)."""
    # .double(), not .to(float64): the latter would also cast BlurFFT's complex phase to real
    op = operators.build(name, img_size=shape, noise_sigma=sigma, **kw).double()
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise = sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = HFuncs(op).H(x) + noise
    return op, invsolve.Problem(op, y, x_true=x)


def _ddpm_prior(net):
    rec = Recorder(net)
    return rec, priors.NetworkPrior(rec, "eps", paths.VPDiscrete(), data_range=(-1, 1))


@pytest.mark.parametrize(("name", "kw"), [("inpaint_random", {"missing": 0.5}),
                                          ("blur_gauss", {"kernel_size": 5, "std": 1.0})])
@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_pigdm_matches_pgdm_py_noiseless(name, kw, eta):
    net = tiny_net()
    op, problem = _problem(name, 0.0, **kw)
    ours, prior = _ddpm_prior(net)
    steps, weight = 10, 0.7
    res = invsolve.solve(problem, prior, "pigdm", steps=steps, eta=eta, weight=weight, noiseless_projection=False, seed=[3, 4],
                         form="published")
    theirs = Recorder(net)
    y_0 = SCALE * problem.y + SHIFT * HFuncs(op).H(torch.ones_like(problem.x_true))  # the [-1, 1] measurement
    out = official_pgdm(theirs, HFuncs(op), y_0, steps, eta, weight, NoiseStream([3, 4], 2), problem.x_shape)
    assert_same_calls(ours, theirs)
    torch.testing.assert_close(res.x, to_ops(out), atol=1e-5, rtol=0)


def test_pigdm_noisy_is_eq8_in_the_same_loop():
    """sigma_y > 0: pgdm.py's loop with Eq. 8 (times r_t^2) in place of its noiseless A^+ (pgdm.py
    ignores sigma_y); sigma_y and r_t^2 = 1 - abar_t in [-1, 1] units, data_var = 1 there."""
    net = tiny_net()
    sigma = 0.05
    op, problem = _problem("blur_gauss", sigma, kernel_size=5, std=1.0)
    ours, prior = _ddpm_prior(net)
    res = invsolve.solve(problem, prior, "pigdm", steps=10, seed=[3, 4], form="published")
    theirs = Recorder(net)
    y_0 = SCALE * problem.y + SHIFT * HFuncs(op).H(torch.ones_like(problem.x_true))
    out = official_pgdm(theirs, HFuncs(op), y_0, 10, 1.0, 1.0, NoiseStream([3, 4], 2), problem.x_shape,
                        sigma_0=SCALE * sigma)
    assert_same_calls(ours, theirs)
    torch.testing.assert_close(res.x, to_ops(out), atol=1e-5, rtol=0)


def test_pigdm_timesteps_are_red_diff_get_timesteps():
    ours, prior = _ddpm_prior(GaussianEps(tiny_net()))
    _, problem = _problem("inpaint_random", 0.05, missing=0.5)
    invsolve.solve(problem, prior, "pigdm", steps=20, seed=0)
    assert [float(t[0]) for _, t, _ in ours.calls] == [float(t) for t in range(950, -1, -50)]


@pytest.mark.parametrize("sigma", [0.0, 0.05])
def test_pigdm_tweedie_form_is_pgdm_py_without_awd(sigma):
    """form="tweedie" (x0_guided = x0 + sigma_t^2 grad_{x_t/alpha_t} log p(y | x_t), then the DDIM step
    from (x_t, x0_guided)) is pgdm.py's awd = False branch, whose push is the DDIM step's derivative in
    x0 times sqrt(abar_t) w g, with the weight w = 1 / abar_t: sigma_t^2 / r_t^2 = 1 / abar_t for data of
    variance 1 in [-1, 1] units, and grad_{x_t/alpha_t} = alpha_t grad_{x_t}."""
    net = GaussianEps(tiny_net())
    op, problem = _problem("blur_gauss", sigma, kernel_size=5, std=1.0)
    ours, prior = _ddpm_prior(net)
    res = invsolve.solve(problem, prior, "pigdm", steps=10, eta=0.5, seed=[3, 4], form="tweedie")
    theirs = Recorder(net)
    y_0 = SCALE * problem.y + SHIFT * HFuncs(op).H(torch.ones_like(problem.x_true))
    out = official_pgdm(theirs, HFuncs(op), y_0, 10, 0.5, lambda abar: 1 / abar, NoiseStream([3, 4], 2),
                        problem.x_shape, sigma_0=SCALE * sigma if sigma else None, awd=False)
    assert_same_calls(ours, theirs)
    torch.testing.assert_close(res.x, to_ops(out), atol=1e-5, rtol=0)


def test_pigdm_noiseless_deblurring_with_the_shipped_prior_stays_in_range():
    """Issue 11: pigdm diverged at step 11 of 20 on noiseless blur_gauss with the natural-rgb prior
    (divisions by singular values near 1e-20 in the Gram solve); the floor removes the cause. Both
    forms."""
    images, _ = natural_rgb_images("test")
    x = images[0][None, :, 150:182, 200:232].float()
    op = operators.build("blur_gauss", img_size=(3, 32, 32), kernel_size=31, std=3.0, noise_sigma=0.0)
    problem = invsolve.Problem.simulate(op, x, seed=0)
    prior = priors.load("natural-rgb")
    for form in ("tweedie", "published"):
        out = invsolve.solve(problem, prior, "pigdm", steps=20, seed=0, form=form).x
        assert torch.isfinite(out).all()
        assert -0.1 < float(out.min()) and float(out.max()) < 1.1
        assert psnr(out.clamp(0, 1), x) > psnr(pinv(op, problem.y).clamp(0, 1), x)


def test_pigdm_noise_unaware_is_pgdm_py_on_noisy_data():
    """noise_aware=False (the "paper" preset): pgdm.py's guidance, which ignores sigma_y."""
    net = tiny_net()
    op, problem = _problem("inpaint_random", 0.05, missing=0.5)
    ours, prior = _ddpm_prior(net)
    res = invsolve.solve(problem, prior, "pigdm", preset="paper", steps=10, seed=[3, 4])
    theirs = Recorder(net)
    y_0 = SCALE * problem.y + SHIFT * HFuncs(op).H(torch.ones_like(problem.x_true))
    out = official_pgdm(theirs, HFuncs(op), y_0, 10, 1.0, 1.0, NoiseStream([3, 4], 2), problem.x_shape)
    assert_same_calls(ours, theirs)
    torch.testing.assert_close(res.x, to_ops(out), atol=1e-5, rtol=0)
