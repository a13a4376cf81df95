"""Checkpoint loaders, tested offline on randomly initialised networks written to temporary files.

Each wrapper's denoiser (images in [0, 1]) is compared with the conversion derived by hand for its
network: x_n = 2x - 1 and s = 2 sigma in the network's [-1, 1] units.
"""

import json
import math

import pytest
import torch
from torch import nn

from invsolve import paths as P
from invsolve import priors
from invsolve.priors import hub


class TinyEpsNet(nn.Module):
    """Stand-in with guided diffusion's interface: forward_diffusion(x, t) -> 2C channels."""

    def __init__(self, c: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(c, 2 * c, 3, padding=1)

    def forward_diffusion(self, x, t):
        return self.conv(x) * torch.cos(t / 300.0)[:, None, None, None]


def _x_sigma(c=3, hw=16):
    torch.manual_seed(1)
    return torch.rand(2, c, hw, hw), torch.tensor([0.05, 0.4])


def test_guided_diffusion_eps_conversion():
    net = TinyEpsNet()
    prior = hub.from_guided_diffusion(net)
    x, sigma = _x_sigma()
    s = 2 * sigma
    t = P.VPDiscrete().t_of_sigma(s)
    alpha = (1 / torch.sqrt(1 + s**2))[:, None, None, None]  # DDPM: x_t = sqrt(abar) x0 + ...
    x_n = 2 * x - 1
    eps = net.forward_diffusion(alpha * x_n, t)[:, :3]
    ref = (x_n - s[:, None, None, None] * eps + 1) / 2
    torch.testing.assert_close(prior.denoise(x, sigma), ref, atol=1e-5, rtol=1e-5)


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="huggingface.co/deepinv/diffunet"):
        priors.load("ffhq-256-dps")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        priors.load("ffhq-256-dps", path=tmp_path / "ffhq_10m.pt")


def test_mismatched_checkpoint_lists_keys():
    with pytest.raises(ValueError, match="missing"):
        hub.load_strict(nn.Conv2d(3, 3, 3), {"weight": torch.zeros(3, 3, 3, 3)}, "x")
    with pytest.raises(ValueError, match="shapes"):
        hub.load_strict(nn.Conv2d(3, 3, 3), {"weight": torch.zeros(3, 3, 1, 1), "bias": torch.zeros(3)},
                        "x")


@pytest.mark.slow
def test_guided_diffusion_checkpoint_file(tmp_path):
    """The real DiffUNet (93 M parameters): a random checkpoint round-trips through priors.load."""
    from deepinv.models import DiffUNet

    torch.manual_seed(0)
    net = DiffUNet(pretrained=None)
    torch.save(net.state_dict(), tmp_path / "ffhq_10m.pt")
    prior = priors.load("ffhq-256-dps", path=tmp_path / "ffhq_10m.pt")
    assert set(prior.module.net.state_dict()) == set(net.state_dict())
    x, sigma = _x_sigma(hw=32)
    s = 2 * sigma
    t = P.VPDiscrete().t_of_sigma(s)
    alpha = (1 / torch.sqrt(1 + s**2))[:, None, None, None]
    with torch.no_grad():
        eps = net.eval().forward_diffusion(alpha * (2 * x - 1), t)[:, :3]
        ref = (2 * x - 1 - s[:, None, None, None] * eps + 1) / 2
        torch.testing.assert_close(prior.denoise(x, sigma), ref, atol=1e-4, rtol=1e-4)


TINY_NCSN = {"img_resolution": 16, "model_channels": 32, "channel_mult": (1, 2), "num_blocks": 1,
                 "attn_resolutions": (8,), "augment_dim": 0, "dropout": 0.0}


def test_edm_ncsnpp_checkpoint(tmp_path):
    from deepinv.models import NCSNpp

    torch.manual_seed(0)
    net = NCSNpp(pretrained=None, pixel_std=0.5, **TINY_NCSN)
    with torch.no_grad():  # EDM zero-initialises the output layer; make F non-trivial
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save(net.state_dict(), tmp_path / "edm.pt")
    prior = hub.edm(tmp_path / "edm.pt", "ncsnpp", **TINY_NCSN)
    assert set(prior.module.net.state_dict()) == set(net.state_dict())
    x, sigma = _x_sigma()
    s = (2 * sigma)[:, None, None, None]
    c_skip, c_out, c_in = 0.25 / (s**2 + 0.25), s * 0.5 / (s**2 + 0.25).sqrt(), 1 / (s**2 + 0.25).sqrt()
    with torch.no_grad():
        F_x = net.eval().forward_unet(c_in * (2 * x - 1), (s.log() / 4).flatten())
        ref = (c_skip * (2 * x - 1) + c_out * F_x + 1) / 2
        torch.testing.assert_close(prior.denoise(x, sigma), ref, atol=1e-5, rtol=1e-5)


def test_flow_velocity_noise_at_zero():
    torch.manual_seed(0)
    net = nn.Conv2d(3, 3, 3, padding=1)
    vel = lambda x, t: net(x) * (1 + t[:, None, None, None])
    prior = hub.from_flow(hub._Call(net, lambda n, x, t: vel(x, t)), noise_at_zero=True)
    x, sigma = _x_sigma()
    s = 2 * sigma
    t = 1 / (1 + s)  # x_t = t x1 + (1 - t) x0 => canonical sigma (1 - t) / t
    tt = t[:, None, None, None]
    x_t = tt * (2 * x - 1)
    ref = (x_t + (1 - tt) * vel(x_t, t) + 1) / 2  # x1 = x_t + (1 - t) u
    torch.testing.assert_close(prior.denoise(x, sigma), ref, atol=1e-5, rtol=1e-5)


def _tiny_diffusers(tmp_path, scheduler: dict):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    unet.save_pretrained(tmp_path / "unet")
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return unet.eval()


def test_diffusers_ddpm_v_prediction_cosine(tmp_path):
    cfg = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000,
           "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"}
    unet = _tiny_diffusers(tmp_path, cfg)
    from diffusers import DDPMScheduler

    ref_abar = DDPMScheduler.from_config(cfg).alphas_cumprod.double()
    path = hub.scheduler_path(cfg)[0]
    torch.testing.assert_close(path.log_abar.exp(), ref_abar, rtol=1e-5, atol=1e-7)

    prior = priors.from_diffusers(tmp_path)
    x, sigma = _x_sigma()
    s = 2 * sigma
    t = path.t_of_sigma(s)
    a, sg = 1 / torch.sqrt(1 + s**2), s / torch.sqrt(1 + s**2)
    x_t = a[:, None, None, None] * (2 * x - 1)
    with torch.no_grad():
        v = unet(x_t, t).sample
    x0 = a[:, None, None, None] * x_t - sg[:, None, None, None] * v  # Salimans & Ho 2022, a^2 + s^2 = 1
    torch.testing.assert_close(prior.denoise(x, sigma), (x0 + 1) / 2, atol=1e-5, rtol=1e-5)


def test_diffusers_flow_match(tmp_path):
    cfg = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000}
    unet = _tiny_diffusers(tmp_path, cfg)
    prior = priors.from_diffusers(tmp_path)
    x, sigma = _x_sigma()
    s = 2 * sigma
    t = s / (1 + s)  # x_t = (1 - t) x0 + t n => canonical sigma t / (1 - t)
    tt = t[:, None, None, None]
    x_t = (1 - tt) * (2 * x - 1)
    with torch.no_grad():
        u = unet(x_t, 1000 * t).sample  # u = n - x0
    torch.testing.assert_close(prior.denoise(x, sigma), (x_t - tt * u + 1) / 2, atol=1e-5, rtol=1e-5)


def test_scaled_linear_betas():
    path = hub.scheduler_path({"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                               "beta_end": 0.012})[0]
    betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=torch.float64) ** 2
    torch.testing.assert_close(path.log_abar, torch.cumsum(torch.log1p(-betas), 0))


@pytest.mark.parametrize("name,channels", [("natural-rgb", 3), ("phantom-ct", 1), ("darcy", 1)])
def test_shipped_priors_load_offline_and_denoise(name, channels):
    from invsolve.priors.datasets import darcy_fields, natural_rgb_images, shepp_logan

    prior = priors.load(name)
    info = prior.info
    assert info["command"].startswith("invsolve train") and info["split"]["test"]
    assert 1e6 < info["architecture"]["parameters"] < 3e6
    lo, hi = info.get("units", (0.0, 1.0))
    if name == "natural-rgb":
        x = natural_rgb_images("test")[0][0][:, 100:164, 150:214]
    else:
        x = shepp_logan(64) if name == "phantom-ct" else darcy_fields(1, "test")[0]
    sigma = 0.1 * (hi - lo)  # 10 % of the data range, in the prior's units
    g = torch.Generator().manual_seed(0)
    y = x + sigma * torch.randn(x.shape, generator=g)
    with torch.no_grad():
        d = prior.denoise(y[None], torch.tensor([sigma]))[0]
    mse_noisy, mse_den = ((y - x) ** 2).mean(), ((d - x) ** 2).mean()
    assert 10 * torch.log10(mse_noisy / mse_den) > 5  # at least 5 dB better than the noisy input


def test_phantom_prior_denoises_real_ct_slice():
    """The phantom-ct prior (trained on ellipses only) on pydicom's real CT slice, sigma 0.1."""
    pytest.importorskip("pydicom")
    from invsolve.priors.datasets import ct_slice

    x = ct_slice()
    assert x.shape == (1, 128, 128) and 0 <= x.min() and x.max() <= 1 and 0.3 < x.mean() < 0.6
    y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        d = priors.load("phantom-ct").denoise(y[None], torch.tensor([0.1]))[0]
    gain = 10 * torch.log10(((y - x) ** 2).mean() / ((d - x) ** 2).mean())
    assert gain > 8  # measured 11 dB


def test_trained_prior_loads_a_run_folder(tmp_path):
    """priors.load("trained", path=...) takes any invsolve train folder: the shipped folder's copy gives
    the shipped prior's denoiser; without path, or with a folder lacking model.pt, the error says what to give."""
    import shutil

    shutil.copytree(hub.WEIGHTS / "phantom-ct", tmp_path / "run")
    a, b = priors.load("trained", path=str(tmp_path / "run")), priors.load("phantom-ct")
    x, s = torch.rand(1, 1, 16, 16), torch.tensor([0.2])
    with torch.no_grad():
        assert torch.equal(a.denoise(x, s), b.denoise(x, s))
    with pytest.raises(ValueError, match="needs path="):
        priors.load("trained")
    (tmp_path / "run" / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="model.pt is missing"):
        priors.load("trained", path=str(tmp_path / "run"))
