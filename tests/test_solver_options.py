"""Options that replace a solver's data step by an exact Gaussian update (``linalg.gaussian_update``):
DAPS ``mcmc="exact"``, PnP-Flow ``data_step="prox"``, FlowChef ``normalize="gram"``, the DAPS Langevin
chain started at its target's mean (``chain_start="mean"``); and the
noiseless projection every solver ends with."""

import pytest
import torch

import invsolve
from invsolve import operators, priors
from invsolve.evaluation import sliced_wasserstein
from invsolve.evaluation.gmm import make_case
from invsolve.solvers.linalg import gaussian_update, has_pseudo_inverse

OPTIONS = [("daps", {"mcmc": "exact"}), ("pnp_flow", {"data_step": "prox"}), ("flowchef", {"normalize": "gram"}),
           ("daps", {"chain_start": "mean"})]


@pytest.mark.parametrize(("name", "hp", "fraction"), [(*OPTIONS[0], 0.15), (*OPTIONS[1], 0.03),
                                                       (*OPTIONS[2], 0.06), (*OPTIONS[3], 0.12)])
def test_options_sample_near_a_single_mode_posterior(name, hp, fraction):
    """MCGdiff mixture d = 8, d_y = 2, problem 0 (one mode): SW to the exact posterior is a small
    fraction of the prior's (measured: DAPS exact 1.80, PnP prox 0.34, FlowChef gram 0.66, DAPS mean start
    1.59 (2.06 from x0_hat); prior 18.2)."""
    case = make_case(8, 2, 0)
    exact = case.posterior.sample(500, seed=1)
    prior_sw = sliced_wasserstein(case.prior.sample(500, seed=3), exact)
    steps = 50 if name == "daps" else 100
    x = invsolve.solve(case.problem.repeat(500), case.prior, name, steps=steps, seed=0, **hp).x
    assert sliced_wasserstein(x, exact) < fraction * prior_sw


@pytest.mark.parametrize(("name", "hp"), OPTIONS)
def test_options_fit_a_large_norm_operator(name, hp):
    """||A||^2 = 3600 (a CT-like scale): the exact update fits y to the noise level in 30 steps."""
    case = make_case(8, 2, 0)
    m = torch.randn(2, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    op = operators.Matrix(60 * m / torch.linalg.matrix_norm(m, 2), noise_sigma=0.05)
    problem = invsolve.Problem.simulate(op, case.prior.sample(4, seed=1), seed=2)
    res = invsolve.solve(problem, case.prior, name, steps=30, seed=0, **hp)
    rel = problem.residual(res.x).norm(dim=1) / problem.y.norm(dim=1)
    assert torch.isfinite(res.x).all() and rel.max() < 0.02, rel


@pytest.mark.parametrize(("name", "hp"), OPTIONS)
def test_options_need_a_linear_gaussian_problem(name, hp):
    op = operators.build("phase_retrieval", img_size=(1, 16, 16), noise_sigma=0.05)
    problem = invsolve.Problem.simulate(op, torch.rand(1, 1, 16, 16), seed=0)
    prior = priors.load("phantom-ct")
    with pytest.raises(ValueError, match="linear"):
        invsolve.solve(problem, prior, name, steps=2, **hp)


@pytest.mark.parametrize(("name", "fix"), [("reddiff", "init='zero'"), ("dflow", "init='noise'")])
def test_pseudo_inverse_starts_need_one_that_works(name, fix):
    """Phase retrieval has only deepinv's generic A_dagger, which fails without a starting point: the
    solver says so and names the option that starts without it, and that option runs."""
    op = operators.build("phase_retrieval", img_size=(1, 8, 8), noise_sigma=0.05)
    assert not has_pseudo_inverse(op) and has_pseudo_inverse(operators.build("sr4", img_size=(1, 8, 8)))
    problem = invsolve.Problem.simulate(op, torch.rand(1, 1, 8, 8), seed=0)
    prior = priors.load("phantom-ct")
    with pytest.raises(ValueError, match=f"FourierPhaseRetrieval has neither.*{fix}"):
        invsolve.solve(problem, prior, name, steps=2)
    key, value = fix.split("=")
    res = invsolve.solve(problem, prior, name, steps=2, **{key: value.strip("'")})
    assert torch.isfinite(res.x).all()


def test_gaussian_update_is_the_conditional_mean_and_the_projection():
    """x + A^T (A A^T + s2 I)^-1 (y - A x) against the dense formula; s2 = 0 lands on {A z = y}."""
    g = torch.Generator().manual_seed(0)
    m = torch.randn(3, 6, generator=g, dtype=torch.float64)
    op = operators.Matrix(m, noise_sigma=0.1)
    x, y = torch.randn(2, 6, generator=g, dtype=torch.float64), torch.randn(2, 3, generator=g, dtype=torch.float64)
    want = x + (m.T @ torch.linalg.solve(m @ m.T + 0.3 * torch.eye(3, dtype=torch.float64), (y - x @ m.T).T)).T
    torch.testing.assert_close(gaussian_update(op, x, y, 0.3), want)
    torch.testing.assert_close(op.A(gaussian_update(op, x, y, 0.0)), y)


def test_gaussian_update_from_a_guess_without_an_svd():
    """Operators without an SVD (CT, PDE maps): conjugate gradient on the normal equations from
    ``guess`` gives the dense formula, and a guess at the answer needs almost no products."""
    from deepinv.physics import LinearPhysics

    g = torch.Generator().manual_seed(0)
    m = torch.randn(30, 60, generator=g, dtype=torch.float64) * torch.logspace(0, -2, 60, dtype=torch.float64)
    calls = []

    def forward(v):
        calls.append(1)
        return v @ m.T

    op = LinearPhysics(A=forward, A_adjoint=lambda u: u @ m)
    x, y = torch.randn(2, 60, generator=g, dtype=torch.float64), torch.randn(2, 30, generator=g, dtype=torch.float64)
    want = x + (m.T @ torch.linalg.solve(m @ m.T + 0.03 * torch.eye(30, dtype=torch.float64), (y - x @ m.T).T)).T
    torch.testing.assert_close(gaussian_update(op, x, y, 0.03, guess=x, tol=1e-12), want)
    cold = len(calls)
    calls.clear()
    torch.testing.assert_close(gaussian_update(op, x, y, 0.03, guess=want, tol=1e-6), want)
    assert len(calls) < cold / 2, (len(calls), cold)


def test_noiseless_projection_is_on_by_default_and_can_be_turned_off():
    case = make_case(8, 2, 0, sigma_y=0.0)
    problem = case.problem.repeat(3)
    on = invsolve.solve(problem, case.prior, "dps", steps=10, seed=0)
    off = invsolve.solve(problem, case.prior, "dps", steps=10, seed=0, noiseless_projection=False)
    assert on.info["noiseless_projection"] and "noiseless_projection" not in off.info
    torch.testing.assert_close(problem.operator.A(on.x), problem.y)
    assert (problem.operator.A(off.x) - problem.y).abs().max() > 1e-3
    # the projection moves only the measured directions: the difference lies in the row space of A
    diff = on.x - off.x
    torch.testing.assert_close(diff, problem.operator.A_dagger(problem.operator.A(diff)))
