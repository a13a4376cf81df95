"""A fast subset of the robustness matrix (experiments/robustness.py): no silent garbage.

Noiseless and noisy Gaussian deblurring and inpainting with the shipped natural-rgb prior, few steps:
every solver returns finite values no worse than 1 dB below the trivial baseline (A^+ y, capped at
CAP dB), or raises a ValueError that says why the pair does not apply.

The cap: where A^+ y is nearly exact (noiseless 16 x 16 deblurring, 51 dB) a posterior *sample* still
carries the posterior's spread in the directions the floored operator leaves unobserved, which A^+ y
sets to 0; a sample above 40 dB is not garbage. experiments/robustness.py flags with the same rule.
"""

import math

import pytest
import torch

import invsolve
from invsolve import operators, priors
from invsolve.evaluation.metrics import psnr
from invsolve.priors.datasets import natural_rgb_images

CAP = 40.0  # dB: the baseline a solver must come within 1 dB of is min(A^+ y, CAP)

FAST = {"daps": {"steps": 10, "ode_steps": 2, "mcmc_steps": 10}, "dflow": {"steps": 4, "ode_steps": 2},
        "mcgdiff": {"particles": 8}, "tds": {"particles": 8}, "pnp_flow": {}, "reddiff": {"steps": 30}}
SOLVERS = sorted(set(invsolve.solvers.available(baselines=False)) - {"ddim"})


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    x = natural_rgb_images("test")[0][0][None, :, 150:166, 200:216]
    return priors.load("natural-rgb"), x


@pytest.mark.parametrize("task,sigma", [("blur_gauss", 0.0), ("blur_gauss", 0.05), ("inpaint_random", 0.0)])
@pytest.mark.parametrize("name", SOLVERS)
def test_no_silent_garbage(name, task, sigma, setting):
    prior, x = setting
    kw = {"kernel_size": 5, "std": 1.0} if task == "blur_gauss" else {"missing": 0.5}
    op = operators.build(task, img_size=(3, 16, 16), noise_sigma=sigma, **kw)
    problem = invsolve.Problem.simulate(op, x, seed=0)
    base = psnr(invsolve.solve(problem, prior, "pinv").x, x)
    hp = FAST.get(name, {"steps": 15})
    try:
        res = invsolve.solve(problem, prior, name, seed=0, **hp)
    except ValueError as err:  # the pair does not apply: the message must say what to use
        assert "try" in str(err) or "use" in str(err), err
        return
    assert torch.isfinite(res.x).all()
    value = psnr(res.x.clamp(0, 1), x)
    assert math.isfinite(value) and value > min(base, CAP) - 1.0, (value, base)
