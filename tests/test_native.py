"""Native schedules, units, sigma = 0, deepinv interop, presets and bad input (issue 11)."""

import warnings

import deepinv as dinv
import pytest
import torch
from trace_utils import Recorder, tiny_net

import invsolve
from invsolve import operators, paths, priors
from invsolve.solvers.base import Preset
from invsolve.solvers.schedules import respace


def _ddpm_prior(net=None) -> priors.NetworkPrior:
    rec = Recorder(net or tiny_net())
    return priors.NetworkPrior(rec, "eps", paths.VPDiscrete(), data_range=(-1, 1))


def _inpainting(shape=(3, 8, 8), sigma=0.05, dtype=torch.float64):
    op = operators.build("inpaint_random", img_size=shape, missing=0.5, noise_sigma=sigma, seed=0)
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    return invsolve.Problem.simulate(op, x, seed=0)


def test_dps_at_1000_steps_queries_the_official_timesteps():
    """A [-1, 1] DDPM network under DPS sees t = 999, 998, ..., 0, each once (DPS's respacing "1000"),
    and never a noise level outside its schedule."""
    prior = _ddpm_prior()
    res = invsolve.solve(_inpainting(), prior, "dps", steps=1000, seed=0)
    times = [float(t[0]) for _, t, _ in prior.module.calls]
    assert times == [float(t) for t in range(999, -1, -1)]
    assert "out_of_range" not in res.info


def test_network_input_is_the_official_chain():
    """On the native path the network input is x_t^net = 2 x_t - alpha_t, x_t in operator units."""
    prior = _ddpm_prior()
    path = prior.native_path()
    x_t = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    prior.x0_at(x_t, torch.tensor([500.0, 20.0], dtype=torch.float64), path)
    x_in, t_in, _ = prior.module.calls[-1]
    alpha = path.alpha(t_in)[:, None, None, None]
    torch.testing.assert_close(x_in, 2 * x_t - alpha)
    assert t_in.tolist() == [500.0, 20.0]


def test_scaled_path_units():
    base = paths.VPDiscrete()
    p = paths.ScaledPath(base, 2.0, -1.0)
    t = torch.tensor([10.0, 500.0], dtype=torch.float64)
    torch.testing.assert_close(p.sigma_canon(t), base.sigma_canon(t) / 2)
    torch.testing.assert_close(p.t_of_sigma(p.sigma_canon(t)), t)
    assert p.center == 0.5 and float(p.terminal_std(t[0])) == 0.5
    with pytest.raises(ValueError, match="scale"):
        paths.ScaledPath(base, 0.0)


def test_respacing_matches_the_reference_codes():
    assert respace(1000, 1000, "guided") == list(range(1000))
    assert respace(1000, 4, "guided") == [0, 333, 666, 999]
    assert respace(1000, 20, "uniform") == list(range(0, 1000, 50))
    with pytest.raises(ValueError, match="spacing"):
        respace(1000, 4, "cosine")


@pytest.mark.parametrize("make", [
    lambda: priors.load("natural-rgb"),
    lambda: priors.mcgdiff_mixture(8),
    lambda: priors.DenoiserPrior(lambda x, s: x / s[:, None, None, None] * s[:, None, None, None]),
    lambda: priors.from_flow(lambda x, t: torch.zeros_like(x), data_range=(0.0, 1.0)),
    lambda: _ddpm_prior(),
])
def test_every_prior_returns_x_at_sigma_zero(make):
    prior = make()
    x = torch.rand(2, 8) if prior.shape == (8,) else torch.rand(2, 3, 8, 8)
    if isinstance(prior, priors.NetworkPrior) and prior.module.__class__.__name__ == "Recorder":
        x = x.double()
    out = prior(x, 0.0)
    assert torch.equal(out, x)
    mixed = prior(x, torch.tensor([0.0, 0.3], dtype=x.dtype))
    assert torch.equal(mixed[0], x[0]) and torch.isfinite(mixed).all()


def test_out_of_range_queries_are_clamped_and_counted():
    prior = priors.load("natural-rgb")  # EDM, valid for sigma in [0.001, 40] in [0, 1] units
    lo, hi = prior.sigma_range
    assert lo == pytest.approx(0.001) and hi == pytest.approx(40.0)
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(prior(x, 1e3), prior(x, hi))
    problem = _inpainting(dtype=torch.float32)
    with pytest.warns(UserWarning, match="outside the prior's noise range"):
        res = invsolve.solve(problem, prior, "dps", steps=20, seed=0)  # DDPM grid tops 78 > 40
    assert res.info["out_of_range"] > 0


@pytest.mark.parametrize("sampler", ["DDRM", "DiffPIR", "DPS"])
def test_deepinv_samplers_run_with_an_invsolve_prior(sampler):
    """deepinv's own DDRM (which ends at sigma = 0), DiffPIR and DPS take an invsolve prior."""
    torch.manual_seed(0)
    prior = priors.load("natural-rgb")
    from invsolve.priors.datasets import natural_rgb_images

    x = natural_rgb_images("test")[0][0][None, :, 150:166, 200:216]
    problem = invsolve.Problem.simulate(operators.build("inpaint_random", img_size=(3, 16, 16),
                                                        missing=0.5, noise_sigma=0.02), x, seed=0)
    if sampler == "DDRM":
        model = dinv.sampling.DDRM(prior, sigmas=torch.linspace(1, 0, 10))
    elif sampler == "DiffPIR":
        model = dinv.sampling.DiffPIR(prior, dinv.optim.data_fidelity.L2(), sigma=0.02, max_iter=10)
    else:
        model = dinv.sampling.DPS(prior, num_steps=10, dtype=torch.float32)
    out = model(problem.y, problem.operator)
    assert torch.isfinite(out).all()
    zero_filled = dinv.loss.metric.PSNR()(problem.y, x)
    if sampler != "DPS":  # 10 DPS steps are too few to beat anything; finiteness is the point
        assert dinv.loss.metric.PSNR()(out.clamp(0, 1), x) > zero_filled + 5


def test_channel_mismatch_names_both_shapes():
    prior = priors.load("natural-rgb")
    op = operators.build("inpaint_random", img_size=(1, 8, 8), missing=0.5, noise_sigma=0.05)
    problem = invsolve.Problem.simulate(op, torch.rand(1, 1, 8, 8), seed=0)
    with pytest.raises(ValueError, match=r"3 channel.*\(1, 8, 8\)"):
        invsolve.solve(problem, prior, "ddrm", steps=2)


def test_unreadable_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "ffhq_10m.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="ffhq_10m.pt.*expected a state dict"):
        priors.load("ffhq-256-dps", path=bad)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "prior.json").write_text("{}")
    (folder / "model.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="model.pt"):
        priors.load_prior(folder)


def test_data_outside_the_prior_range_warns():
    prior = priors.load("natural-rgb")
    op = operators.build("inpaint_random", img_size=(3, 8, 8), missing=0.5, noise_sigma=0.05)
    problem = invsolve.Problem.simulate(op, 255 * torch.rand(1, 3, 8, 8), seed=0)
    with pytest.warns(UserWarning, match=r"divide\s+8-bit images by 255|trained on \[0, 1\]"):
        invsolve.solve(problem, prior, "ddrm", steps=2)
    fine = invsolve.Problem.simulate(op, torch.rand(1, 3, 8, 8), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        invsolve.solve(fine, prior, "ddrm", steps=2, path="vp_discrete")


def test_presets_resolve_by_task(monkeypatch):
    cls = invsolve.solvers.get("dps")
    table = {"paper": {"inpaint_random": Preset({"zeta": 0.5}, "test"), "sr4": Preset({"zeta": 0.3}, "test")}}
    monkeypatch.setattr(cls, "presets", table)
    assert cls.preset_values("paper", "inpaint_random") == {"zeta": 0.5}
    assert cls.preset_values("paper:sr4") == {"zeta": 0.3}
    with pytest.raises(ValueError, match="no entry for task 'blur_gauss'.*inpaint_random"):
        cls.preset_values("paper", "blur_gauss")
    with pytest.raises(ValueError, match="no preset 'tuned'"):
        cls.preset_values("tuned", "sr4")
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        cls.preset_values({"lr": 1.0})
    problem = _inpainting()
    prior = _ddpm_prior()
    a = invsolve.solve(problem, prior, "dps", steps=3, seed=0, preset="paper")
    b = invsolve.solve(problem, prior, "dps", steps=3, seed=0, zeta=0.5)
    c = invsolve.solve(problem, prior, "dps", steps=3, seed=0, preset="paper", zeta=0.3)
    d = invsolve.solve(problem, prior, "dps", steps=3, seed=0, preset="paper:sr4")
    torch.testing.assert_close(a.x, b.x)
    torch.testing.assert_close(c.x, d.x)
