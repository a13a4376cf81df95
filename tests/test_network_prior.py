"""NetworkPrior recovers the exact mixture denoiser from an oracle 'network' in every parameterization."""

import pytest
import torch
from torch import nn

from invsolve import paths as P
from invsolve import priors

PATHS = [P.VE(), P.VPLinear(), P.VPDiscrete(), P.VPCosine(), P.LinearFlow(), P.LinearFlow(noise_at_zero=True)]


class Oracle(nn.Module):
    """Predicts ``kind`` on ``path`` exactly, from the mixture's denoiser (in its own units)."""

    def __init__(self, gmm, kind, path, time_scale=1.0):
        super().__init__()
        self.gmm, self.kind, self.path, self.time_scale = gmm, kind, path, time_scale

    def forward(self, x_t, t):
        t = t / self.time_scale
        alpha = P.bcast(self.path.alpha(t), x_t)
        x0 = self.gmm.denoise(x_t / alpha, self.path.sigma_canon(t))
        return P.from_x0(x0, self.kind, x_t, t, self.path)


def _gmm(scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(0)
    means = torch.rand(4, 3, generator=g, dtype=torch.float64) * scale + shift
    return priors.GaussianMixture(means, torch.ones(4, dtype=torch.float64), std=0.1 * scale)


@pytest.mark.parametrize("path", PATHS, ids=repr)
@pytest.mark.parametrize("kind", P.PREDICTIONS)
def test_oracle_network_gives_exact_denoiser(path, kind):
    gmm = _gmm()
    prior = priors.NetworkPrior(Oracle(gmm, kind, path), parameterization=kind, path=path)
    x = torch.rand(5, 3, dtype=torch.float64)
    sigma = torch.tensor([0.02, 0.1, 0.3, 1.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(prior.denoise(x, sigma), gmm.denoise(x, sigma), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["eps", "v", "velocity"])
def test_data_range_conversion(kind):
    """A network trained on [-1, 1] data, used in [0, 1] units: the mixture pushed through x -> (x+1)/2."""
    path = P.VPDiscrete() if kind != "velocity" else P.LinearFlow(noise_at_zero=True)
    net_gmm = _gmm(scale=2.0, shift=-1.0)
    op_gmm = priors.GaussianMixture((net_gmm.means + 1) / 2, net_gmm.weights, std=0.1)
    prior = priors.NetworkPrior(Oracle(net_gmm, kind, path, time_scale=1000.0), parameterization=kind,
                                path=path, data_range=(-1, 1), time_fn=lambda t: 1000.0 * t)
    x = torch.rand(4, 3, dtype=torch.float64)
    sigma = torch.tensor([0.05, 0.2, 0.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(prior.denoise(x, sigma), op_gmm.denoise(x, sigma), rtol=1e-6, atol=1e-6)


def test_derived_quantities_follow_denoiser():
    gmm = _gmm()
    x = torch.rand(3, 3, dtype=torch.float64)
    s = torch.full((3,), 0.4, dtype=torch.float64)
    d = gmm.denoise(x, s)
    torch.testing.assert_close(gmm.score(x, s), (d - x) / 0.16)
    torch.testing.assert_close(gmm.eps(x, 0.4), (x - d) / 0.4)
    path = P.LinearFlow()
    t = torch.full((3,), 0.3, dtype=torch.float64)
    xt = 0.7 * x
    x0 = gmm.x0_at(xt, t, path)
    torch.testing.assert_close(x0, gmm.denoise(x, torch.full((3,), 0.3 / 0.7, dtype=torch.float64)))
    torch.testing.assert_close(gmm.velocity_at(xt, t, path), (xt - 0.7 * x0) / 0.3 - x0)  # u = eps - x0


def test_mismatched_output_and_bad_arguments():
    class Wrong(nn.Module):
        def forward(self, x, t):
            return torch.cat([x, x], 1)

    x = torch.rand(2, 3)
    with pytest.raises(ValueError, match="learned_variance"):
        priors.NetworkPrior(Wrong(), "eps").denoise(x, torch.ones(2))
    out = priors.NetworkPrior(Wrong(), "x0", learned_variance=True, path="ve").denoise(x, torch.ones(2))
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="parameterization"):
        priors.NetworkPrior(Wrong(), "noise")
    with pytest.raises(ValueError, match="sigma"):
        _gmm().denoise(torch.zeros(2, 3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
