"""Trace equivalence of invsolve's DAPS with the official sampler (zhangbingliang2019/DAPS).

``official_daps`` is an independent transcription of the official loop in its own conventions:
[-1, 1] images, EDM sigmas, a DDPM eps-network queried through EDM's ``VPPrecond``
(``model/precond.py``: D(x, sigma) = x - sigma F(x / sqrt(1 + sigma^2), (M - 1) t(sigma)), t the
inverse of the continuous VP-linear schedule, beta_min 0.1, beta_d 19.9, M = 1000);
``sampler.py`` ``DAPS.sample`` (N levels sigma_steps[0..N-1], re-noise with sigma_steps[i + 1],
the last of which is 0); ``cores/scheduler.py`` (``EDMScheduler``: poly-7 grid of N + 1 levels,
``discretize`` drops its last level and appends 0; ``DiffusionPFODE.sample``: torchdiffeq's
fixed-grid Euler on the derivative -sigma score); ``cores/mcmc.py`` (``MCMCSampler.sample``:
Langevin on -grad loss / tau^2 + (x_t - x) / sigma^2 + (x0_hat - x_t) / sigma^2 with
``get_lr(step / (N + 1))``); ``forward_operator`` ``Operator.loss``: squared residuals summed per
sample, no 1/2.

invsolve runs on ``NetworkPrior(net, "eps", VPLinear(0.1, 20), time_fn=999 t, data_range=(-1,
1))``, the same conversion, and both consume the same noise (``NoiseStream``) in invsolve's order:
the start, then per level one block of Langevin draws and one re-noise draw.
"""

import math

import pytest
import torch
from trace_utils import NoiseStream, Recorder, assert_same_calls, tiny_net, to_net, to_ops

import invsolve
from invsolve import operators, paths, priors
from invsolve.solvers.daps import DAPS

SHAPE = (3, 8, 8)
N, ODE_N, MCMC_N = 6, 3, 5


def vp_precond_sigma_inv(sigma):
    """model/precond.py VPPrecond.sigma_inv with beta_min 0.1, beta_d 19.9."""
    return ((0.1**2 + 2 * 19.9 * torch.log1p(sigma**2)).sqrt() - 0.1) / 19.9


def poly7(n, sigma_max, sigma_min):
    """EDMScheduler.get_discrete_time_steps(n): n poly-7 levels from sigma_max to sigma_min."""
    r = torch.linspace(0, 1, n, dtype=torch.float64)
    return (sigma_max ** (1 / 7) + r * (sigma_min ** (1 / 7) - sigma_max ** (1 / 7))) ** 7


def official_daps(net, a_net, y_net, noise, *, lr, tau, lr_min_ratio=0.01, sigma_max=100.0,
                  sigma_min=0.1, ode_sigma_min=0.01, lr_at=None):
    """The official DAPS sampler (Langevin) in [-1, 1] units; ``lr_at(step, sigma)``, if given,
    replaces get_lr."""

    def tweedie(x, sigma):  # DDPM.tweedie -> VPPrecond.forward
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        c_in, c_noise = 1 / (sigma**2 + 1).sqrt(), 999 * vp_precond_sigma_inv(sigma)
        return x - sigma * net(c_in * x, c_noise.expand(x.shape[0]))

    grid = poly7(N + 1, sigma_max, sigma_min)
    sigma_steps = torch.cat([grid[:-1], torch.zeros(1, dtype=torch.float64)])
    xt = noise.randn(*SHAPE) * sigma_max  # get_start: randn * prior sigma (= sigma_max for EDM)
    for step in range(N):
        sigma = sigma_steps[step]
        ts = poly7(ODE_N + 1, sigma, ode_sigma_min)  # get_diffusion_scheduler(..., sigma_max=sigma)
        x = xt
        with torch.no_grad():
            for j in range(ODE_N):  # Euler on dx/dt = -sigma(t) score(x, sigma(t)), t = sigma
                score = (tweedie(x, ts[j]) - x) / ts[j] ** 2
                x = x + (ts[j + 1] - ts[j]) * (-ts[j] * score)
        x0hat = x
        ratio = step / (N + 1)  # annealing_scheduler.num_steps is N + 1
        lr_i = lr * (1 + ratio * (lr_min_ratio - 1)) if lr_at is None else lr_at(step, sigma)
        prior_score = (x0hat - xt) / sigma**2  # prior_solver "gaussian"
        kicks = noise.randn(MCMC_N, *SHAPE)
        xx = x0hat.clone()
        for k in range(MCMC_N):
            xg = xx.detach().requires_grad_(True)
            loss = ((a_net(xg) - y_net) ** 2).flatten(1).sum(-1)  # Operator.loss
            (grad,) = torch.autograd.grad(loss.sum(), xg)  # Operator.gradient
            score = -grad / tau**2 + (xt - xx) / sigma**2 + prior_score
            xx = (xx + lr_i * score + (2 * lr_i) ** 0.5 * kicks[:, k]).detach()
        # forward diffusion with sigma_steps[step + 1] (0 after the last level: x0y itself)
        xt = xx + noise.randn(*SHAPE) * sigma_steps[step + 1] if step + 1 < N else xx
    return xt


def daps_prior(net):
    return priors.NetworkPrior(net, "eps", paths.VPLinear(0.1, 20.0), time_fn=lambda t: 999 * t,
                               data_range=(-1.0, 1.0))


def linear_case(seed=0, sigma_y=0.025):
    op = operators.build("inpaint_random", img_size=SHAPE, missing=0.5, noise_sigma=sigma_y)
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    problem = invsolve.Problem.simulate(op, x, seed=1)
    y_net = 2 * problem.y - op.A(torch.ones_like(x))  # y_net = s y + c A(1) for x_net = s x + c
    return problem, op.A, y_net


def run_both(problem, a_net, y_net, seed=3, official=None, **hp):
    net = tiny_net()
    ours, theirs = Recorder(net), Recorder(net)
    hp = {"chain_start": "x0_hat", **hp}  # the official chain starts at x0_hat
    res = invsolve.solve(problem, daps_prior(ours), "daps", steps=N, ode_steps=ODE_N,
                         mcmc_steps=MCMC_N, seed=seed, **hp)
    out = official_daps(theirs, a_net, y_net, NoiseStream(seed, len(problem)), **(official or {}))
    assert_same_calls(ours, theirs)
    return res, out


def test_vp_precond_is_the_vp_linear_prior():
    """The prior above is EDM's VPPrecond: same network input, same time, same D(x, sigma)."""
    net = tiny_net()
    x_net = 3 * torch.randn(2, *SHAPE, dtype=torch.float64)
    for sigma in (100.0, 3.0, 0.01):
        s = torch.tensor(sigma, dtype=torch.float64)
        t_in = 999 * vp_precond_sigma_inv(s).expand(2)
        expected = x_net - s * net(x_net / (s**2 + 1).sqrt(), t_in)
        sigma_ops = torch.full((2,), sigma / 2, dtype=torch.float64)
        got = to_net(daps_prior(net).denoise(to_ops(x_net), sigma_ops))
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


def test_paper_form_matches_the_official_loop_linear():
    """step="fixed", likelihood="paper" (the "paper" preset's form) on random inpainting."""
    problem, a_net, y_net = linear_case()
    res, out = run_both(problem, a_net, y_net, step="fixed", likelihood="paper", lr=1e-4, tau=0.01,
                        official={"lr": 1e-4, "tau": 0.01})
    assert res.nfe == N * ODE_N
    torch.testing.assert_close(res.x, to_ops(out), rtol=0, atol=1e-5)
    assert (res.x - to_ops(out)).abs().max() < 1e-10


def test_paper_preset_matches_the_official_loop_phase_retrieval():
    """The "paper" preset on phase retrieval: the official operator maps x_net to [0, 1] before the
    FFT, so y is the same number in both codes (y_scale = 1) and tau = 0.01 acts unscaled."""
    op = operators.build("phase_retrieval", img_size=SHAPE, noise_sigma=0.05)
    x = torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    problem = invsolve.Problem.simulate(op, x, seed=1)
    preset = DAPS.preset_values("paper", "phase_retrieval")
    assert preset["y_scale"] == 1.0 and preset["lr"] == 5e-5 and preset["likelihood"] == "paper"
    hp = {k: v for k, v in preset.items() if k not in ("steps", "ode_steps", "mcmc_steps")}
    res, out = run_both(problem, lambda x_net: op.A((x_net + 1) / 2), problem.y, **hp,
                        official={"lr": 5e-5, "tau": 0.01})
    torch.testing.assert_close(res.x, to_ops(out), rtol=0, atol=1e-5)


def test_problem_likelihood_is_the_paper_form_with_tau_sqrt2_sigma_y():
    """The default data term ||y - A x||^2 / (2 sigma_y^2) is the official one with tau_net =
    sqrt(2) * 2 sigma_y: only the weight differs, not the form."""
    problem, a_net, y_net = linear_case(sigma_y=0.05)
    sigma_y = problem.noise_sigma  # 0.05 as deepinv stores it (float32)
    res, out = run_both(problem, a_net, y_net, step="fixed", lr=1e-4,
                        official={"lr": 1e-4, "tau": math.sqrt(2) * 2 * sigma_y})
    torch.testing.assert_close(res.x, to_ops(out), rtol=0, atol=1e-5)


@pytest.mark.parametrize("likelihood, ratio", [("paper", 0.01), ("problem", None)])
def test_lipschitz_step_only_changes_the_step_size(likelihood, ratio):
    """The default step="lipschitz" is the official update with lr_i = c (get_lr factor) / L_i,
    L_i = 1 / sigma_i^2 + (data curvature) in network units, ||A||^2 from the dense matrix here
    (default: the fraction 0.05 and the paper's decay to lr_min_ratio 0.01)."""
    problem, a_net, y_net = linear_case(sigma_y=0.05)
    dense = torch.stack([a_net(e.reshape(1, *SHAPE))[0].flatten()
                         for e in torch.eye(math.prod(SHAPE), dtype=torch.float64)], 1)
    norm2 = torch.linalg.matrix_norm(dense, 2) ** 2
    # tau in network units; the data term is ||.||^2 / tau^2 ("paper": curvature 2 ||A||^2 / tau^2)
    tau = 0.01 if likelihood == "paper" else math.sqrt(2) * 2 * problem.noise_sigma

    def lr_at(step, sigma):
        factor = 1 + step / (N + 1) * ((ratio or 0.01) - 1)
        return 0.05 * factor / (1 / sigma**2 + 2 * norm2 / tau**2)

    res, out = run_both(problem, a_net, y_net, likelihood=likelihood, lr_min_ratio=ratio,
                        official={"lr": None, "tau": tau, "lr_at": lr_at})
    assert DAPS().step == "lipschitz" and DAPS().likelihood == "problem"  # the defaults
    torch.testing.assert_close(res.x, to_ops(out), rtol=0, atol=1e-5)


def test_levels_and_lr_schedule_are_the_official_ones():
    """Levels: the first N of N + 1 poly-7 levels (sigma_min is never visited); the lr factor uses
    i / (N + 1)."""
    daps = DAPS(steps=200, step="fixed")
    prior = daps_prior(tiny_net())
    levels = torch.tensor(daps.levels(prior), dtype=torch.float64) * prior.data_scale
    torch.testing.assert_close(levels, poly7(201, 100.0, 0.1)[:200], rtol=1e-12, atol=0)
    assert levels[-1] > 0.1 and daps.lr_factor(199) == pytest.approx(1 - 199 / 201 * 0.99)


def test_paper_presets():
    one = DAPS.preset_values("paper", "sr4")
    assert one == {"steps": 200, "ode_steps": 5, "mcmc_steps": 100, "lr": 1e-4,
                   "lr_min_ratio": 0.01, "tau": 0.01, "sigma_max": 100.0, "sigma_min": 0.1,
                   "ode_sigma_min": 0.01, "step": "fixed", "likelihood": "paper",
                   "chain_start": "x0_hat"}
    lrs = {"blur_gauss": 1e-4, "blur_motion": 5e-5, "inpaint_box": 5e-5, "inpaint_random": 1e-4,
           "hdr": 2e-5}
    assert {t: DAPS.preset_values("paper", t)["lr"] for t in lrs} == lrs
    four = DAPS.preset_values("paper-4k", "phase_retrieval")
    assert (four["steps"], four["ode_steps"], four["lr"]) == (400, 10, 5e-5)
    assert "configs/task/down_sampling.yaml" in DAPS.presets["paper"]["sr4"].source
    with pytest.raises(ValueError, match="no entry for task"):
        DAPS.preset_values("paper", "ct_sparse")


class GuidedStandIn(torch.nn.Module):
    """guided diffusion's interface (forward_diffusion(x, t) -> eps and variance, 2C channels)."""

    def __init__(self):
        super().__init__()
        self.net = tiny_net(channels=3)
        self.in_channels = 3

    def forward_diffusion(self, x, t):
        eps = self.net(x, t)
        return torch.cat([eps, torch.zeros_like(eps)], 1)


def test_guided_diffusion_loader_offers_the_daps_conversion():
    """from_guided_diffusion(net, schedule="vp_linear") is VPPrecond around the guided-diffusion
    UNet; the default stays the discrete DDPM schedule."""
    net = GuidedStandIn()
    assert isinstance(priors.hub.from_guided_diffusion(net).path, paths.VPDiscrete)
    prior = priors.hub.from_guided_diffusion(net, schedule="vp_linear")
    x_net = 3 * torch.randn(2, *SHAPE, dtype=torch.float64)
    for sigma in (100.0, 2.5, 0.01):
        s = torch.tensor(sigma, dtype=torch.float64)
        t_in = 999 * vp_precond_sigma_inv(s).expand(2)
        expected = x_net - s * net.forward_diffusion(x_net / (s**2 + 1).sqrt(), t_in)[:, :3]
        got = to_net(prior.denoise(to_ops(x_net), torch.full((2,), sigma / 2, dtype=torch.float64)))
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="vp_linear"):
        priors.hub.from_guided_diffusion(net, schedule="cosine")
