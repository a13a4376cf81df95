"""Probability-flow ODE steppers (invsolve.solvers.ode): order of convergence on an exact ODE, and the
solver options that use them (ddim, ot_ode)."""

import math

import pytest
import torch

import invsolve
from invsolve import operators
from invsolve import paths as P
from invsolve.priors import mcgdiff_mixture
from invsolve.solvers.ode import PathStepper, stepper_nfe

PATH = P.VPLinear()
T_HI, T_LO = 0.6, 0.05  # canonical sigma 6.1 down to 0.17 on the default VP path


def _grid(n: int) -> tuple[list[float], list[float], torch.Tensor]:
    t = torch.linspace(T_HI, T_LO, n + 1, dtype=torch.float64)
    return PATH.alpha(t).tolist(), PATH.sigma(t).tolist(), t


def _integrate(prior, x: torch.Tensor, n: int, method: str) -> torch.Tensor:
    """x at T_LO from x at T_HI, n steps of ``method`` on the mixture's exact data prediction."""
    alphas, sigmas, t = _grid(n)
    stepper = PathStepper(alphas, sigmas, method)

    def data(z: torch.Tensor, i: int) -> torch.Tensor:
        return prior.x0_at(z, t[i], PATH)

    for i in range(n):
        x = stepper.step(i, x, data(x, i), data)
    return x


def test_second_order_steppers_converge_at_order_two():
    """Error against a fine Heun solution falls as n^-1 for Euler (DDIM) and n^-2 for Heun and
    DPM-Solver++(2M), on the exact probability-flow ODE of the MCGdiff mixture (d = 8)."""
    prior = mcgdiff_mixture(8, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    a0, s0, _ = _grid(1)
    x = a0[0] * prior.sample(32, seed=1) + s0[0] * torch.randn(32, 8, generator=g, dtype=torch.float64)
    ref = _integrate(prior, x, 2048, "heun")
    ns = (16, 32, 64, 128)
    slopes = {}
    for method in ("euler", "heun", "dpm2m"):
        errs = [float((_integrate(prior, x, n, method) - ref).norm()) for n in ns]
        logs = [(math.log(n), math.log(e)) for n, e in zip(ns, errs, strict=True)]
        mx = sum(a for a, _ in logs) / len(logs)
        my = sum(b for _, b in logs) / len(logs)
        slopes[method] = sum((a - mx) * (b - my) for a, b in logs) / sum((a - mx) ** 2 for a, _ in logs)
    assert -1.3 < slopes["euler"] < -0.8, slopes
    assert slopes["heun"] < -1.8, slopes
    assert slopes["dpm2m"] < -1.8, slopes


def test_first_order_step_is_ddim_and_flow_euler():
    """The Euler step equals the DDIM step (eta = 0) and, on the linear flow path, x + dt v."""
    g = torch.Generator().manual_seed(2)
    x, d = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    a_t, s_t, a_s, s_s = 0.6, 0.8, 0.9, 0.3
    eps = (x - a_t * d) / s_t
    st = PathStepper([a_t, a_s], [s_t, s_s])
    torch.testing.assert_close(st.step(0, x, d), a_s * d + s_s * eps)
    t, dt = 0.3, 0.2  # noise at t = 0: alpha = t, sigma = 1 - t, velocity (d - x) / (1 - t)
    fl = PathStepper([t, t + dt], [1 - t, 1 - t - dt])
    torch.testing.assert_close(fl.step(0, x, d), x + dt * (d - x) / (1 - t))


def test_heun_and_multistep_nfe_and_end_at_data():
    prior = mcgdiff_mixture(8, dtype=torch.float64)
    problem = invsolve.Problem.simulate(operators.Matrix(torch.randn(2, 8, dtype=torch.float64), noise_sigma=0.5),
                                        prior.sample(1, seed=0), seed=0)
    for method, nfe in (("euler", 10), ("heun", 19), ("dpm2m", 10)):
        res = invsolve.solve(problem.repeat(4), prior, "ddim", steps=10, method=method, seed=0)
        assert res.nfe == nfe == stepper_nfe(method, 10)
        assert torch.isfinite(res.x).all()
        res = invsolve.solve(problem, prior, "ot_ode", steps=10, method=method, seed=0)
        assert res.nfe == nfe and torch.isfinite(res.x).all()
    with pytest.raises(ValueError, match="eta=0"):
        invsolve.solvers.get("ddim")(method="heun", eta=0.5)
    with pytest.raises(ValueError, match="method"):
        invsolve.solvers.get("ot_ode")(method="rk4")



def test_daps_inner_ode_second_order():
    """DAPS's x0_hat ODE (``ode_method``): on the mixture's exact denoiser, from sigma 2 down to 0.01,
    doubling the steps (10 -> 20) cuts the error against a fine Euler solution about 2x for Euler and
    about 4x for Heun and DPM-Solver++(2M), which are well ahead at equal steps; each method counts its
    network calls per level, and an unknown method is a ValueError."""
    from invsolve.solvers.daps import DAPS

    prior = mcgdiff_mixture(8, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    x = prior.sample(64, seed=4) + 2.0 * torch.randn(64, 8, generator=g, dtype=torch.float64)
    ref = DAPS(ode_steps=4000).ode_x0(prior, x, 2.0, 0.01)

    def err(method: str, n: int) -> float:
        return float((DAPS(ode_steps=n, ode_method=method).ode_x0(prior, x, 2.0, 0.01) - ref).norm())

    ratio = {m: err(m, 10) / err(m, 20) for m in ("euler", "heun", "dpm2m")}
    assert 1.6 < ratio["euler"] < 2.5 and ratio["heun"] > 3.2 and ratio["dpm2m"] > 3.2, ratio
    assert max(err("heun", 10), err("dpm2m", 10)) < 0.3 * err("euler", 10)
    assert [DAPS(steps=3, ode_steps=5, ode_method=m).expected_nfe() for m in ("euler", "heun", "dpm2m")] == [15, 30, 15]
    with pytest.raises(ValueError, match="ode_method"):
        DAPS(ode_method="rk4").validate()
