import pytest
import torch

from invsolve import paths as P

ALL_PATHS = [P.VE(), P.VPLinear(), P.VPDiscrete(), P.VPCosine(), P.LinearFlow(), P.LinearFlow(noise_at_zero=True)]


def _times(path, n=7):
    lo, hi = path.t_min, path.t_max
    if isinstance(path, P.VE):
        lo, hi = 0.01, 50.0
    return torch.linspace(lo + 0.02 * (hi - lo), hi - 0.02 * (hi - lo), n, dtype=torch.float64)


@pytest.mark.parametrize("path", ALL_PATHS, ids=repr)
@pytest.mark.parametrize("kind", P.PREDICTIONS)
def test_prediction_round_trip_and_consistency(path, kind):
    g = torch.Generator().manual_seed(1)
    t = _times(path)
    x0 = torch.randn(len(t), 3, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(len(t), 3, 4, generator=g, dtype=torch.float64)
    xt = path.sample(x0, eps, t)
    pred = P.from_x0(x0, kind, xt, t, path)
    torch.testing.assert_close(P.to_x0(pred, kind, xt, t, path), x0, rtol=1e-9, atol=1e-9)
    # every prediction converts to the eps that generated x_t
    torch.testing.assert_close(P.convert(pred, kind, "eps", xt, t, path), eps, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("path", ALL_PATHS, ids=repr)
def test_velocity_is_time_derivative(path):
    """u = d/dt (alpha_t x0 + sigma_t eps), checked by central differences of the path itself."""
    t = _times(path)
    x0, eps = torch.randn(len(t), 5, dtype=torch.float64), torch.randn(len(t), 5, dtype=torch.float64)
    h = 1e-6 * (path.t_max - path.t_min) if not isinstance(path, P.VE) else 1e-5
    fd = (path.sample(x0, eps, t + h) - path.sample(x0, eps, t - h)) / (2 * h)
    u = P.from_x0(x0, "velocity", path.sample(x0, eps, t), t, path)
    torch.testing.assert_close(u, fd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ALL_PATHS, ids=repr)
def test_t_of_sigma_inverts_sigma_canon(path):
    t = _times(path)
    torch.testing.assert_close(path.t_of_sigma(path.sigma_canon(t)), t, rtol=1e-7, atol=1e-7)


def test_discrete_vp_matches_ddpm_schedule():
    path = P.VPDiscrete()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    t = torch.tensor([0.0, 1.0, 10.0, 500.0, 999.0], dtype=torch.float64)
    torch.testing.assert_close(path.alpha(t) ** 2, abar[t.long()], rtol=1e-10, atol=0)
    torch.testing.assert_close(path.alpha(t) ** 2 + path.sigma(t) ** 2, torch.ones_like(t))


def test_vp_paths_preserve_variance():
    for path in (P.VPLinear(), P.VPCosine()):
        t = _times(path)
        torch.testing.assert_close(path.alpha(t) ** 2 + path.sigma(t) ** 2, torch.ones_like(t))


def test_bad_names_raise():
    with pytest.raises(ValueError, match="unknown path"):
        P.get_path("nope")
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="unknown prediction"):
        P.to_x0(x, "noise", x, torch.ones(2), P.VE())
    with pytest.raises(ValueError, match=r"\(B,\)"):
        P.bcast(torch.ones(3), x)
