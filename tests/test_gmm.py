import pytest
import torch

import invsolve
from invsolve import operators, priors


def _mixture(d=4, k=3, seed=0, cov=False):
    g = torch.Generator().manual_seed(seed)
    means = 3 * torch.randn(k, d, generator=g, dtype=torch.float64)
    w = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    c = None
    if cov:
        m = torch.randn(d, d, generator=g, dtype=torch.float64)
        c = m @ m.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
    return priors.GaussianMixture(means, w, std=0.7, cov=c)


@pytest.mark.parametrize("cov", [False, True])
def test_denoiser_is_tweedie_of_log_prob(cov):
    """D(x, s) = x + s^2 grad log p_s(x), with log p_s from the independent log_prob code path."""
    prior = _mixture(cov=cov)
    x = (4 * torch.randn(6, 4, dtype=torch.float64)).requires_grad_(True)
    s = torch.tensor([0.01, 0.1, 0.5, 1.0, 3.0, 20.0], dtype=torch.float64)
    (g,) = torch.autograd.grad(prior.log_prob(x, s).sum(), x)
    torch.testing.assert_close(prior.denoise(x.detach(), s), x.detach() + s[:, None] ** 2 * g)


def test_log_prob_matches_torch_distributions():
    prior = _mixture(cov=True)
    dist = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(prior.weights),
        torch.distributions.MultivariateNormal(prior.means, covariance_matrix=prior.cov.expand(3, 4, 4)))
    x = torch.randn(5, 4, dtype=torch.float64) * 3
    torch.testing.assert_close(prior.log_prob(x), dist.log_prob(x))


def test_sample_moments():
    prior = _mixture(cov=True)
    x = prior.sample(40000, seed=3)
    mean = (prior.weights[:, None] * prior.means).sum(0)
    torch.testing.assert_close(x.mean(0), mean, atol=0.06, rtol=0)
    torch.testing.assert_close(prior.sample(5, seed=1), prior.sample(5, seed=1))


def test_posterior_matches_precision_form():
    """Closed-form posterior against the precision-form formulas (MCGdiff's get_posterior)."""
    prior = _mixture(d=5, k=4, cov=True)
    g = torch.Generator().manual_seed(2)
    a = torch.randn(2, 5, generator=g, dtype=torch.float64)
    op = operators.Matrix(a, noise_sigma=0.3)
    problem = invsolve.Problem.simulate(op, prior.sample(1, seed=0), seed=0)
    post = prior.posterior(problem)
    cinv = torch.linalg.inv(prior.cov)
    prec = cinv + a.T @ a / 0.09
    cov = torch.linalg.inv(prec)
    y = problem.y[0]
    means = (cov @ (cinv @ prior.means.T + (a.T @ y / 0.09)[:, None])).T
    torch.testing.assert_close(post.cov, cov, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(post.means, means, rtol=1e-6, atol=1e-8)
    # weights: w_k N(y; A mu_k, A C A^T + s^2 I)
    gram = a @ prior.cov @ a.T + 0.09 * torch.eye(2, dtype=torch.float64)
    logw = torch.log(prior.weights) + torch.distributions.MultivariateNormal(
        prior.means @ a.T, covariance_matrix=gram).log_prob(y)
    torch.testing.assert_close(post.weights, torch.softmax(logw, 0))


def test_posterior_matches_importance_sampling():
    """Posterior mean against self-normalised importance sampling from the prior (independent route)."""
    prior = _mixture(d=2, k=3)
    op = operators.Matrix(torch.tensor([[1.0, 0.5]], dtype=torch.float64), noise_sigma=1.0)
    problem = invsolve.Problem.simulate(op, prior.sample(1, seed=4), seed=4)
    xs = prior.sample(400000, seed=5)
    logw = -problem.repeat(len(xs)).misfit(xs)
    w = torch.softmax(logw, 0)
    post = prior.posterior(problem)
    mean = (post.weights[:, None] * post.means).sum(0)
    torch.testing.assert_close((w[:, None] * xs).sum(0), mean, atol=0.03, rtol=0)


def test_posterior_needs_one_measurement_and_gaussian_noise():
    prior = _mixture(d=2)
    op = operators.Matrix(torch.ones(1, 2, dtype=torch.float64), noise_sigma=0.1)
    problem = invsolve.Problem.simulate(op, prior.sample(2, seed=0), seed=0)
    with pytest.raises(ValueError, match=r"problem\[i\]"):
        prior.posterior(problem)


def test_bad_mixtures_raise():
    with pytest.raises(ValueError, match="means"):
        priors.GaussianMixture(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="weights"):
        priors.GaussianMixture(torch.zeros(3, 2), torch.ones(2))
    with pytest.raises(ValueError, match="shape"):
        priors.mcgdiff_mixture(4).denoise(torch.zeros(2, 5), torch.ones(2))


def test_mcgdiff_mixture_grid():
    p = priors.mcgdiff_mixture(6, seed=0)
    assert p.means.shape == (25, 6)
    assert set(p.means[:, 0].tolist()) == {-16.0, -8.0, 0.0, 8.0, 16.0}
    torch.testing.assert_close(p.means[:, 0], p.means[:, 2])
    assert abs(float(p.weights.sum()) - 1) < 1e-6
