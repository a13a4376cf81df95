"""Every diffusion solver on deepinv operators with a small (random-init) network prior: smoke tests.

Correctness against the exact posterior is the GMM benchmark's job (tests/test_solvers.py and
experiments/gmm_posterior.py); here: right shape, finite values, NFE as documented, clear errors.
"""

import pytest
import torch

import invsolve
from invsolve import operators, priors

DIFFUSION = ["dps", "mcg", "ddrm", "pigdm", "diffpir", "reddiff", "daps"]
FAST = {"daps": {"mcmc_steps": 2, "ode_steps": 2}}


@pytest.fixture(scope="module")
def net_prior():
    torch.manual_seed(0)
    net = priors.UNet(in_channels=3, channels=8, channel_mult=(1, 2), num_res_blocks=1, groups=4)
    return priors.NetworkPrior(priors.EDMPrecond(net), parameterization="x0", path="ve",
                               data_range=(-1, 1), time_fn=None).eval()


@pytest.mark.parametrize("name", DIFFUSION)
def test_runs_on_inpainting_with_network_prior(name, net_prior):
    op = operators.build("inpaint_random", img_size=(3, 16, 16), missing=0.7, noise_sigma=0.05)
    problem = invsolve.Problem.simulate(op, torch.rand(2, 3, 16, 16), seed=0)
    hp = FAST.get(name, {})
    res = invsolve.solve(problem, net_prior, name, steps=3, seed=0, **hp)
    assert res.x.shape == (2, 3, 16, 16) and torch.isfinite(res.x).all()
    assert res.nfe == invsolve.solvers.get(name)(steps=3, **hp).expected_nfe()


@pytest.mark.parametrize("name", ["dps", "daps", "reddiff"])
def test_general_solvers_take_a_nonlinear_operator(name, net_prior):
    op = operators.build("phase_retrieval", img_size=(3, 8, 8), noise_sigma=0.05)
    problem = invsolve.Problem.simulate(op, torch.rand(1, 3, 8, 8), seed=0)
    hp = {**FAST.get(name, {}), **({"init": "zero"} if name == "reddiff" else {})}
    res = invsolve.solve(problem, net_prior, name, steps=2, seed=0, **hp)
    assert torch.isfinite(res.x).all()


@pytest.mark.parametrize("name", ["pigdm", "diffpir", "mcg"])
def test_linear_solvers_refuse_nonlinear_operators(name, net_prior):
    op = operators.build("phase_retrieval", img_size=(3, 8, 8), noise_sigma=0.05)
    problem = invsolve.Problem.simulate(op, torch.rand(1, 3, 8, 8), seed=0)
    with pytest.raises(ValueError, match="linear operator"):
        invsolve.solve(problem, net_prior, name, steps=2)


def test_ddrm_needs_an_svd(net_prior):
    op = operators.build("sr2", img_size=(3, 16, 16), noise_sigma=0.05)
    problem = invsolve.Problem.simulate(op, torch.rand(1, 3, 16, 16), seed=0)
    with pytest.raises(ValueError, match="decomposable operator"):
        invsolve.solve(problem, net_prior, "ddrm", steps=2)


def test_dps_poisson_variant_weights_the_residual():
    from deepinv.physics import Denoising, PoissonNoise

    op = Denoising(noise_model=PoissonNoise(gain=0.05))
    problem = invsolve.Problem.simulate(op, torch.rand(1, 1, 4, 4, dtype=torch.float64) + 0.5, seed=0)
    dps = invsolve.solvers.get("dps")()
    x0 = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    expected = ((problem.y - x0) / torch.sqrt(2 * problem.y.clamp_min(1e-3))).flatten().norm()
    torch.testing.assert_close(dps.residual_norms(problem, x0), expected.reshape(1))
    forced = invsolve.solvers.get("dps")(likelihood="gaussian")
    torch.testing.assert_close(forced.residual_norms(problem, x0), (problem.y - x0).flatten().norm().reshape(1))


def test_ddrm_noiseless_inpainting_keeps_observed_pixels(net_prior):
    """With sigma_y = 0 and eta_b = 1, DDRM's last step sets observed coordinates to y exactly."""
    op = operators.build("inpaint_random", img_size=(3, 16, 16), missing=0.5, noise_sigma=0.0)
    x = torch.rand(1, 3, 16, 16)
    problem = invsolve.Problem.simulate(op, x, seed=0)
    out = invsolve.solve(problem, net_prior, "ddrm", steps=4, seed=0).x
    torch.testing.assert_close(op.A(out), problem.y, atol=1e-5, rtol=0)


def test_mcg_projects_noiseless_measurements(net_prior):
    """MCG always projects (Alg. 1). y_level="next" ends on A x = y; the default (the official
    q_sample at the step's own level) leaves the last level's noise, sigma_0 = 0.005 here."""
    op = operators.build("inpaint_random", img_size=(3, 16, 16), missing=0.5, noise_sigma=0.0)
    problem = invsolve.Problem.simulate(op, torch.rand(1, 3, 16, 16), seed=0)
    res = invsolve.solve(problem, net_prior, "mcg", steps=4, seed=0, y_level="next")
    torch.testing.assert_close(op.A(res.x), problem.y, atol=1e-5, rtol=0)
    res = invsolve.solve(problem, net_prior, "mcg", steps=4, noiseless_projection=False, seed=0)
    assert (op.A(res.x) - problem.y).abs().max() < 0.03
    dps = invsolve.solve(problem, net_prior, "dps", steps=4, noiseless_projection=False, seed=0)
    assert (op.A(dps.x) - problem.y).abs().max() > 0.1  # the gradient step alone does not get there
