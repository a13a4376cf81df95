"""The project's UNet and EDM preconditioning (Karras et al. 2022, Table 1)."""

import torch

from invsolve.priors.unet import EDMPrecond, UNet, build_prior


def _tiny(**kw) -> UNet:
    torch.manual_seed(0)
    return UNet(channels=8, channel_mult=(1, 2), num_res_blocks=1, **kw)


def test_fully_convolutional_any_size():
    net = _tiny(in_channels=1)
    for hw in [(16, 16), (17, 23), (40, 12)]:
        x = torch.randn(2, 1, *hw)
        assert net(x, torch.zeros(2)).shape == x.shape


def test_output_depends_on_noise_level():
    net = _tiny()
    for p in net.parameters():  # zero-initialised output layers hide the conditioning
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, 3, 16, 16)
    assert not torch.allclose(net(x, torch.tensor([-1.0])), net(x, torch.tensor([1.0])))


def test_default_size_for_shipped_priors():
    n = sum(p.numel() for p in UNet().parameters())
    assert 1e6 < n < 3e6


def test_edm_precond_matches_table_1():
    net = _tiny()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    pre = EDMPrecond(net, sigma_data=0.5)
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor([0.1, 3.0])
    s = sigma[:, None, None, None]
    c_skip, c_out = 0.25 / (s**2 + 0.25), s * 0.5 / (s**2 + 0.25).sqrt()
    ref = c_skip * x + c_out * net(x / (s**2 + 0.25).sqrt(), sigma.log() / 4)
    torch.testing.assert_close(pre(x, sigma), ref)


def test_build_prior_range_conversion():
    """prior.denoise works in [0, 1]: D01(x, s) = (D_net(2x - 1, 2s) + 1) / 2."""
    net = _tiny()
    info = {"architecture": {"kwargs": net.config}, "objective": "edm", "sigma_data": 0.5,
            "data_range": [-1.0, 1.0], "units": [0.0, 1.0]}
    prior = build_prior(info, net.state_dict())
    x, sigma = torch.rand(2, 3, 16, 16), torch.tensor([0.05, 0.4])
    ref = (EDMPrecond(net, 0.5)(2 * x - 1, 2 * sigma) + 1) / 2
    torch.testing.assert_close(prior.denoise(x, sigma), ref)
