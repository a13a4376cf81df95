"""Flow solvers (ot_ode, dflow, pnp_flow, flowchef): the exact mixture velocity, checks against exact
posteriors, the per-sample L-BFGS, and smoke runs with diffusion- and flow-trained network priors.

The generic NFE / dtype / batch-invariance tests for every registered solver are in test_solvers.py.
"""

import warnings

import pytest
import torch
from torch.distributions import MultivariateNormal

import invsolve
from invsolve import operators, paths, priors
from invsolve.evaluation import sliced_wasserstein
from invsolve.evaluation.gmm import make_case
from invsolve.solvers.dflow import BatchLBFGS

FLOW = ["ot_ode", "dflow", "pnp_flow", "flowchef"]


def _mixture_velocity(x, t, means, weights, cov, path):
    """Closed-form marginal velocity of a Gaussian mixture on a Gaussian path, derived here:
    x_t | k ~ N(a mu_k, a^2 C + s^2 I); E[x0 | x, k] = mu_k + a C S^-1 (x - a mu_k) and
    E[eps | x, k] = s S^-1 (x - a mu_k) with S = a^2 C + s^2 I; u = E[a' x0 + s' eps | x]."""
    tt = torch.tensor(t, dtype=torch.float64)
    a, s, da, ds = (float(f(tt)) for f in (path.alpha, path.sigma, path.d_alpha, path.d_sigma))
    d = means.shape[1]
    cov_t = a**2 * cov + s**2 * torch.eye(d, dtype=torch.float64)
    logp = torch.stack([MultivariateNormal(a * m, cov_t).log_prob(x) for m in means], 1) + weights.log()
    resp = torch.softmax(logp, 1)  # (B, K)
    out = torch.zeros_like(x)
    for k, m in enumerate(means):
        white = torch.linalg.solve(cov_t, (x - a * m).T).T
        x0 = m + a * white @ cov.T
        eps = s * white
        out += resp[:, k : k + 1] * (da * x0 + ds * eps)
    return out


@pytest.mark.parametrize("noise_at_zero", [False, True])
def test_converted_velocity_is_the_exact_mixture_velocity(noise_at_zero):
    g = torch.Generator().manual_seed(0)
    d, k = 5, 4
    means = 3 * torch.randn(k, d, generator=g, dtype=torch.float64)
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    root = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    cov = root @ root.T + 0.3 * torch.eye(d, dtype=torch.float64)
    prior = priors.GaussianMixture(means, weights, cov=cov)
    path = paths.LinearFlow(noise_at_zero=noise_at_zero)
    for t in (0.05, 0.3, 0.5, 0.8, 0.97):
        x = 4 * torch.randn(64, d, generator=g, dtype=torch.float64)
        got = prior.velocity_at(x, t, path)
        want = _mixture_velocity(x, t, means, weights / weights.sum(), cov, path)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def _gaussian_case(d=6, dy=2, sigma_y=0.1):
    """Unit Gaussian prior N(0, I) with a random A: the PiGDM Gaussian approximation of OT-ODE
    (data variance 1) is then exact, and the posterior is Gaussian."""
    prior = priors.GaussianMixture(torch.zeros(1, d, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    g = torch.Generator().manual_seed(3)
    op = operators.Matrix(torch.randn(dy, d, generator=g, dtype=torch.float64), noise_sigma=sigma_y)
    problem = invsolve.Problem.simulate(op, 2 * torch.ones(1, d, dtype=torch.float64), seed=1)
    return prior, problem, prior.posterior(problem)


def test_ot_ode_samples_a_gaussian_posterior():
    """With a unit Gaussian prior the correction of Pokle et al. is the exact likelihood score; only the
    start (t0 A^+ y + (1 - t0) eps) is approximate, so a small t0 gives near-exact posterior samples,
    while dropping the correction (gamma = 0 through a huge sigma_y stand-in) would give the prior."""
    prior, problem, post = _gaussian_case()
    exact = post.sample(1000, seed=1)
    floor = sliced_wasserstein(post.sample(1000, seed=2), exact)
    prior_sw = sliced_wasserstein(prior.sample(1000, seed=3), exact)
    x = invsolve.solve(problem.repeat(1000), prior, "ot_ode", steps=100, t0=0.02, seed=0).x
    sw = sliced_wasserstein(x, exact)
    assert sw < 2 * floor and sw < 0.1 * prior_sw, (sw, floor, prior_sw)
    # covariance too, not just the mean
    torch.testing.assert_close(torch.cov(x.T), post.cov, atol=0.08, rtol=0)


def test_flowchef_recovers_a_single_mode_gmm_posterior():
    """MCGdiff mixture, d = 8, d_y = 2, problem 0: one posterior mode (weight > 0.99)."""
    case = make_case(8, 2, 0)
    assert case.posterior.weights.max() > 0.99
    exact = case.posterior.sample(500, seed=1)
    prior_sw = sliced_wasserstein(case.prior.sample(500, seed=3), exact)
    x = invsolve.solve(case.problem.repeat(500), case.prior, "flowchef", steps=100, seed=0).x
    assert sliced_wasserstein(x, exact) < 0.03 * prior_sw


def test_flowchef_warns_that_it_fits_noisy_measurements():
    """The guidance drives A x0_hat to y whatever sigma_y: a noisy problem gets a warning and a
    residual far below the noise; a noiseless one no warning."""
    case = make_case(8, 2, 0)
    noisy = case.problem.repeat(4)
    assert noisy.noise_sigma > 0
    with pytest.warns(UserWarning, match="flowchef: the guidance ignores the measurement noise"):
        x = invsolve.solve(noisy, case.prior, "flowchef", steps=50, seed=0).x
    assert noisy.residual(x).pow(2).mean() < 0.1 * noisy.noise_sigma**2
    matrix = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    clean = invsolve.Problem.simulate(operators.Matrix(matrix), case.prior.sample(1, seed=0), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        invsolve.solve(clean, case.prior, "flowchef", steps=5, seed=0)


@pytest.mark.parametrize("name", ["pnp_flow", "ot_ode"])
def test_flow_solvers_find_the_posterior_mode(name):
    """Same single-mode case: the sample mean lies near the posterior mean (far from the prior mean)
    and the samples explain y to within a few noise levels, though the spread need not be right."""
    case = make_case(8, 2, 0)
    # OT-ODE: r_t^2 at the mixture's variance scale and an early start (its A^+ y start is biased)
    hp = {"ot_ode": {"data_var": 64.0, "t0": 0.01}}.get(name, {})
    x = invsolve.solve(case.problem.repeat(200), case.prior, name, steps=100, seed=0, **hp).x
    post_mean = case.posterior.weights @ case.posterior.means
    prior_mean = case.prior.weights @ case.prior.means
    assert (x.mean(0) - post_mean).norm() < 0.1 * (prior_mean - post_mean).norm()
    resid = case.problem.repeat(200).residual(x).norm(dim=1)
    assert resid.median() < 5 * case.sigma_y * 2**0.5, resid.median()


def test_dflow_fits_the_measurement():
    """D-Flow is an optimiser, not a sampler: each sample's ODE output explains y to the noise level
    and its loss is far below that of the blended start (the mode it lands in depends on the start)."""
    case = make_case(8, 2, 0)
    res = invsolve.solve(case.problem.repeat(16), case.prior, "dflow", steps=100, seed=0)
    resid = case.problem.repeat(16).residual(res.x).norm(dim=1)
    assert resid.median() < 5 * case.sigma_y * 2**0.5, resid.median()
    start = invsolve.solve(case.problem.repeat(16), case.prior, "dflow", steps=1, seed=0)
    assert (res.info["loss"] < 0.1 * start.info["loss"].abs()).float().mean() > 0.9


def test_batch_lbfgs_minimises_each_quadratic_independently():
    """Per-sample L-BFGS on B quadratics of very different conditioning: each converges to its own
    minimiser, and the trajectory of a sample does not depend on its batch mates."""
    g = torch.Generator().manual_seed(0)
    b, d = 5, 6
    scales = torch.logspace(0, 3, b, dtype=torch.float64)  # condition numbers 1 .. 1000
    h = torch.stack([torch.diag(torch.logspace(0, float(s.log10()), d, dtype=torch.float64)) for s in scales])
    c = torch.randn(b, d, generator=g, dtype=torch.float64)

    def run(idx, evals):
        opt = BatchLBFGS(torch.zeros(len(idx), d, dtype=torch.float64))
        for _ in range(evals):
            z = opt.propose()
            r = z - c[idx]
            hr = torch.einsum("bij,bj->bi", h[idx], r)
            opt.observe(0.5 * (r * hr).sum(1), hr, z)
        return opt.z

    z = run(list(range(b)), 60)
    torch.testing.assert_close(z, c, atol=1e-6, rtol=0)
    torch.testing.assert_close(run(list(range(b)), 12)[2:3], run([2], 12), atol=0, rtol=0)


def _unet():
    torch.manual_seed(0)
    net = priors.UNet(in_channels=3, channels=8, channel_mult=(1, 2), num_res_blocks=1, groups=4)
    torch.nn.init.normal_(net.head[-1].weight, std=0.02)  # random, not the zero-initialised head
    return net


@pytest.fixture(scope="module")
def network_priors():
    return {"diffusion": priors.NetworkPrior(_unet(), "eps", path="vp_discrete", data_range=(-1, 1)).eval(),
            "flow": priors.NetworkPrior(_unet(), "velocity", path=paths.LinearFlow(noise_at_zero=True),
                                        data_range=(-1, 1)).eval()}


FAST = {"dflow": {"ode_steps": 2}}


@pytest.mark.parametrize("kind", ["diffusion", "flow"])
@pytest.mark.parametrize("name", FLOW)
def test_flow_solvers_run_with_network_priors(name, kind, network_priors):
    op = operators.build("inpaint_box", img_size=(3, 16, 16), noise_sigma=0.05)
    problem = invsolve.Problem.simulate(op, torch.rand(2, 3, 16, 16), seed=0)
    hp = FAST.get(name, {})
    res = invsolve.solve(problem, network_priors[kind], name, steps=3, seed=0, **hp)
    assert res.x.shape == (2, 3, 16, 16) and torch.isfinite(res.x).all()
    assert res.nfe == invsolve.solvers.get(name)(steps=3, **hp).expected_nfe()


def test_errors_are_clear(network_priors):
    case = make_case(8, 2, 0)
    with pytest.raises(ValueError, match="t0"):
        invsolve.solve(case.problem, case.prior, "ot_ode", t0=0.0)
    with pytest.raises(ValueError, match="method"):
        invsolve.solve(case.problem, case.prior, "dflow", method="rk4")
    op = operators.build("phase_retrieval", img_size=(3, 8, 8), noise_sigma=0.05)
    problem = invsolve.Problem.simulate(op, torch.rand(1, 3, 8, 8), seed=0)
    with pytest.raises(ValueError, match="linear"):
        invsolve.solve(problem, network_priors["flow"], "ot_ode", steps=2)


def _scaled_operator_problem(scale=60.0, sigma=0.05):
    """Mixture problem with A scaled so that ||A||^2 = scale^2 (a CT-like norm)."""
    case = make_case(8, 2, 0)
    m = torch.randn(2, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    m = scale * m / torch.linalg.matrix_norm(m, 2)
    op = operators.Matrix(m, noise_sigma=sigma)
    return case.prior, invsolve.Problem.simulate(op, case.prior.sample(4, seed=1), seed=2)


@pytest.mark.parametrize("name, paper", [("pnp_flow", {"normalize": "none"}), ("flowchef", {"normalize": "mse"})])
def test_normalised_steps_are_stable_where_the_paper_step_diverges(name, paper):
    """||A||^2 = 3600: the paper's absolute step diverges (the gradient step stops contracting once
    gamma ||A||^2 > 2); the default, gamma / ||A||^2, stays finite and fits the measurement."""
    prior, problem = _scaled_operator_problem()
    gradient = {"data_step": "gradient"} if name == "pnp_flow" else {}  # pnp_flow's default is the prox
    res = invsolve.solve(problem, prior, name, steps=30, seed=0, **gradient)
    torch.testing.assert_close(res.info["op_norm2"], torch.full((4,), 3600.0, dtype=torch.float64), rtol=1e-6,
                               atol=0)
    rel = problem.residual(res.x).norm(dim=1) / problem.y.norm(dim=1)
    # finite and explaining most of y (PnP-Flow's gradient steps fit the weaker direction slowly)
    assert torch.isfinite(res.x).all() and rel.max() < 0.25, rel
    hp = {**paper, "step": 500.0} if name == "flowchef" else {**paper, **gradient}
    with pytest.raises(FloatingPointError, match="diverged|non-finite"):
        invsolve.solve(problem, prior, name, steps=30, seed=0, **hp)


@pytest.mark.parametrize("name", FLOW)
def test_paper_presets_name_their_source_and_apply_per_task(name):
    cls = invsolve.solvers.get(name)
    table = cls.presets["paper"]
    assert "inpaint_box" in table and all(p.source for p in table.values())
    values = cls.preset_values("paper", "inpaint_box")
    assert set(values) <= set(cls.hyperparameters())
    if name == "pnp_flow":
        assert values["alpha"] == 0.5 and cls.preset_values("paper", "blur_gauss")["alpha"] == 0.01
    if name == "ot_ode":
        assert cls.preset_values("paper", "blur_gauss")["t0"] == 0.4
    if name == "dflow":
        assert values["steps"] == 9 and values["optimizer"] == "torch"


def test_dflow_regulariser_is_the_chi_distribution():
    """R(z) = -log chi_d(||z||) + const: its minimum over the norm is at ||z|| = sqrt(d - 1), the mode
    of the chi distribution (the chi^2_d form would put it at sqrt(d - 2))."""
    case = make_case(8, 2, 0)
    solver = invsolve.solvers.get("dflow")(lam=1.0, ode_steps=1)
    d = 8
    norms = torch.linspace(2.0, 3.5, 3001, dtype=torch.float64)
    z = torch.zeros(len(norms), d, dtype=torch.float64)
    z[:, 0] = norms
    problem = invsolve.Problem(case.problem.operator, case.problem.y.expand(len(norms), -1))
    fit = invsolve.solvers.get("dflow")(lam=0.0, ode_steps=1).objective(problem, case.prior, z)[0]
    reg = solver.objective(problem, case.prior, z)[0] - fit
    best = float(norms[reg.argmin()])
    assert abs(best - (d - 1) ** 0.5) < 2e-3, best
