"""SMC solvers (MCGdiff, TDS): batch invariance, chunking, exactness as particles grow, bad input."""

import pytest
import torch
from deepinv.physics import PoissonNoise

import invsolve
from invsolve import operators, priors
from invsolve.evaluation import sliced_wasserstein
from invsolve.evaluation.gmm import make_case
from invsolve.solvers import smc

SMC = ["mcgdiff", "tds"]


def _problem(n: int, noise: float = 0.3):
    prior = priors.mcgdiff_mixture(8, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    m = torch.randn(2, 8, generator=g, dtype=torch.float64)
    op = operators.Matrix(m / torch.linalg.matrix_norm(m, 2), noise_sigma=noise)
    return prior, invsolve.Problem.simulate(op, prior.sample(n, seed=1), seed=2)


@pytest.mark.parametrize("name", SMC)
def test_batch_invariance(name):
    """3 measurements in one batch = 3 runs of 1, each row's particles from its own seed (float64)."""
    prior, problem = _problem(3)
    kw = {"steps": 8, "particles": 16, "seed": [5, 6, 7]}
    batch = invsolve.solve(problem, prior, name, **kw)
    for i in range(3):
        one = invsolve.solve(problem[i], prior, name, steps=8, particles=16, seed=[5 + i])
        torch.testing.assert_close(one.x, batch.x[i:i + 1], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(one.info["particles"], batch.info["particles"][i:i + 1],
                                   rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", SMC)
def test_chunked_equals_unchunked(name):
    prior, problem = _problem(2)
    kw = {"steps": 8, "particles": 20, "seed": 3}
    whole = invsolve.solve(problem, prior, name, chunk=4096, **kw)
    parts = invsolve.solve(problem, prior, name, chunk=7, **kw)
    torch.testing.assert_close(parts.x, whole.x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(parts.info["log_weights"], whole.info["log_weights"], rtol=1e-9,
                               atol=1e-9)
    assert parts.nfe == whole.nfe == 8  # one NFE per step whatever the chunk count
    info = whole.info
    assert info["particles"].shape == (2, 20, 8) and info["log_weights"].shape == (2, 20)
    assert info["ess"].shape == (8, 2) and (info["ess"] <= 20 + 1e-9).all()
    torch.testing.assert_close(info["log_weights"].exp().sum(1), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("name", SMC)
def test_closer_to_posterior_as_particles_grow(name):
    """One draw per measurement from K particles: SW to the exact posterior falls with K (d=8)."""
    case = make_case(8, 1, 2)
    ref = case.posterior.sample(256, seed=1)
    sw = []
    for k in (1, 4, 32):
        res = invsolve.solve(case.problem.repeat(256), case.prior, name, steps=20, particles=k, seed=0)
        sw.append(sliced_wasserstein(res.x, ref))
    floor = sliced_wasserstein(case.posterior.sample(256, seed=2), ref)
    assert sw[0] > sw[1] > sw[2], sw
    assert sw[2] < 0.2 * sw[0] and sw[2] < 6 * floor, (sw, floor)


def test_mcgdiff_noiseless_hits_the_measurement():
    """Noiseless: every particle satisfies A x = y exactly (the observed coordinates are set to y)."""
    prior, problem = _problem(2, noise=0.0)
    res = invsolve.solve(problem, prior, "mcgdiff", steps=10, particles=8, seed=0)
    ax = problem.operator.A(res.info["particles"].flatten(0, 1)).reshape(2, 8, -1)
    torch.testing.assert_close(ax, problem.y[:, None].expand_as(ax), rtol=0, atol=1e-10)
    assert (res.info["hit_step"][:2] == 10).all()  # hit at the clean end


def test_smc_bad_input():
    prior, problem = _problem(1, noise=0.0)
    with pytest.raises(ValueError, match="mcgdiff"):
        invsolve.solve(problem, prior, "tds", steps=4, particles=2)
    blur = operators.build("blur_gauss", img_size=(1, 8, 8), kernel_size=3, std=1.0, noise_sigma=0.1)
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="orthonormal SVD"):
        invsolve.solve(invsolve.Problem.simulate(blur, x), priors.DenoiserPrior(lambda x, s: x),
                       "mcgdiff", steps=3, particles=2)
    for bad in ({"particles": 0}, {"eta": 0.0}, {"chunk": 0}, {"resample_below": 2.0}):
        with pytest.raises(ValueError):
            invsolve.solvers.get("mcgdiff")(**bad)
        with pytest.raises(ValueError):
            invsolve.solvers.get("tds")(**bad)


def test_tds_poisson_likelihood():
    """TDS runs on Poisson counts (any differentiable likelihood): samples move towards the data."""
    means = torch.tensor([[4.0, 4.0], [12.0, 12.0]], dtype=torch.float64)
    prior = priors.GaussianMixture(means, torch.tensor([0.5, 0.5], dtype=torch.float64), std=1.0)
    op = operators.Matrix(torch.eye(2, dtype=torch.float64))
    op.noise_model = PoissonNoise(gain=0.05)
    x_true = torch.tensor([[12.0, 12.0]], dtype=torch.float64)
    problem = invsolve.Problem.simulate(op, x_true, seed=0)
    res = invsolve.solve(problem, prior, "tds", steps=20, particles=64, seed=0)
    x = smc.pooled_samples(res.info["particles"], res.info["log_weights"], 64)
    assert (x.mean(0) - 12).abs().max() < 1.5, x.mean(0)


def test_mcgdiff_grid_adapts_to_the_noise_level():
    """A grid time moves to each hitting time tau (v_tau <= r, integer on the DDPM path); count kept."""
    from invsolve import paths as P
    from invsolve.solvers.mcgdiff import adapt_grid
    from invsolve.solvers.schedules import timesteps

    path = P.get_path("vp_discrete")
    ts = timesteps(path, 20, "guided")
    r = torch.tensor([0.05**2, 0.3**2, float("inf"), 0.0], dtype=torch.float64)
    out = adapt_grid(path, ts, r)
    assert len(out) == 20 and (out[:-1] > out[1:]).all() and out[0] == ts[0] and out[-1] == ts[-1]
    for v in (0.05, 0.3):
        tau = torch.floor(path.t_of_sigma(torch.tensor(v, dtype=torch.float64)))
        assert (out == tau).any() and path.sigma_canon(tau) <= v
    assert (out != ts).sum() == 2


def test_tds_gram_twist_is_the_gaussian_likelihood_of_x0_hat():
    """The "gram" twist is log N(y; A x0, s2 I + v A A^T) (up to a constant) with its exact gradient;
    on an inpainting mask (A A^T = I where observed) it equals the official "diagonal" twist."""
    from invsolve.solvers.tds import _Expanded

    _, problem = _problem(2)
    many = _Expanded(problem, 3, 4096)
    x0 = torch.randn(6, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64,
                     requires_grad=True)
    v, s2 = 0.7, problem.noise.sigma**2
    got = many.log_lik_gram(x0, slice(0, 6), v, 1e-12, 100)
    a = problem.operator.A(torch.eye(8, dtype=torch.float64)).T  # (2, 8)
    cov = s2 * torch.eye(2, dtype=torch.float64) + v * a @ a.T
    r = problem.y.repeat_interleave(3, 0) - x0 @ a.T
    want = -0.5 * (r * torch.linalg.solve(cov, r.T).T).sum(1)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    (g_got,) = torch.autograd.grad(got.sum(), x0)
    (g_want,) = torch.autograd.grad(want.sum(), x0)
    torch.testing.assert_close(g_got, g_want, rtol=1e-8, atol=1e-10)

    op = operators.build("inpaint_random", img_size=(1, 6, 6), missing=0.5, noise_sigma=0.1)
    inpaint = invsolve.Problem.simulate(op, torch.rand(2, 1, 6, 6, dtype=torch.float64), seed=0)
    many = _Expanded(inpaint, 3, 4096)
    x0 = torch.rand(6, 1, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(many.log_lik_gram(x0, slice(0, 6), v, 1e-6, 50) + 0.0,
                               many.log_lik(x0, slice(0, 6), v), rtol=1e-10, atol=1e-10)


def test_tds_gram_twist_does_not_depend_on_the_operator_scale():
    """(c A, c y, c sigma_y) is the same posterior as (A, y, sigma_y): with the "gram" twist TDS returns
    the same particles for c = 1 and c = 30; the official "diagonal" twist (which widens by v_t alone)
    moves them, since its Tweedie step grows with ||A||^2."""
    prior = priors.mcgdiff_mixture(8, dtype=torch.float64)
    m = torch.randn(2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m = m / torch.linalg.matrix_norm(m, 2)
    x = prior.sample(2, seed=1)
    runs = {}
    for twist in ("gram", "diagonal"):
        for c in (1.0, 30.0):
            op = operators.Matrix(c * m, noise_sigma=0.3 * c)
            problem = invsolve.Problem.simulate(operators.Matrix(m, noise_sigma=0.3), x, seed=2)
            problem = invsolve.Problem(op, c * problem.y)
            res = invsolve.solve(problem, prior, "tds", steps=10, particles=16, seed=4, twist=twist)
            assert res.info["twist"] == twist
            runs[twist, c] = res.info["particles"]
    torch.testing.assert_close(runs["gram", 30.0], runs["gram", 1.0], rtol=1e-6, atol=1e-6)
    assert (runs["diagonal", 30.0] - runs["diagonal", 1.0]).abs().max() > 0.1


def test_tds_twist_choice():
    """"auto" is the Gram twist for a linear Gaussian problem and the diagonal one otherwise; asking
    for "gram" where it does not apply is a clear error."""
    prior, problem = _problem(1)
    assert invsolve.solve(problem, prior, "tds", steps=3, particles=2).info["twist"] == "gram"
    op = operators.Matrix(torch.eye(8, dtype=torch.float64))
    op.noise_model = PoissonNoise(gain=0.05)
    counts = invsolve.Problem.simulate(op, prior.sample(1, seed=0).abs() + 1, seed=0)
    assert invsolve.solve(counts, prior, "tds", steps=3, particles=2).info["twist"] == "diagonal"
    with pytest.raises(ValueError, match="twist='diagonal'"):
        invsolve.solve(counts, prior, "tds", steps=3, particles=2, twist="gram")
    for bad in ({"twist": "full"}, {"cg_tol": 0.0}, {"cg_max_iter": 0}):
        with pytest.raises(ValueError):
            invsolve.solvers.get("tds")(**bad)
