"""Reduced precision for network priors: bf16 autocast around the network only."""

import pytest
import torch

import invsolve
from invsolve import operators, priors
from invsolve.priors.datasets import natural_rgb_images, shepp_logan


def _psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    mse = (x.clamp(0, 1) - ref).pow(2).flatten(1).mean(1)
    return float((-10 * torch.log10(mse)).mean())


def _denoising_loss(prior, clean: torch.Tensor) -> dict[float, float]:
    """PSNR(fp32) - PSNR(bf16) of the denoiser at sigma 0.05 and 0.2 on ``clean`` (same noise)."""
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    loss = {}
    for s in (0.05, 0.2):
        y, sig = clean + s * noise, torch.full((len(clean),), s)
        with torch.no_grad():
            full = _psnr(prior.set_precision(None).denoise(y, sig), clean)
            half = _psnr(prior.set_precision("bf16").denoise(y, sig), clean)
        loss[s] = full - half
    prior.set_precision(None)
    return loss


def test_bf16_denoiser_loses_at_most_005_db_on_held_out_photo():
    photo = natural_rgb_images("test")[0][0]  # chelsea, never seen in training
    crops = torch.stack([photo[:, y:y + 64, x:x + 64] for y in (40, 150) for x in (60, 330)])
    loss = _denoising_loss(priors.load("natural-rgb"), crops)
    assert all(v <= 0.05 for v in loss.values()), loss


def test_bf16_denoiser_loses_at_most_005_db_on_shepp_logan():
    loss = _denoising_loss(priors.load("phantom-ct"), shepp_logan(64).reshape(1, 1, 64, 64).float())
    assert all(v <= 0.05 for v in loss.values()), loss


def test_solver_state_keeps_its_dtype_under_bf16():
    prior = priors.load("natural-rgb", precision="bf16")
    assert prior.precision == "bf16"
    x = torch.rand(1, 3, 16, 16)
    problem = invsolve.Problem.simulate(operators.build("inpaint_random", img_size=(3, 16, 16),
                                                        noise_sigma=0.02), x, seed=0)
    res = invsolve.solve(problem, prior, "ddrm", steps=3, seed=0)
    assert res.x.dtype == torch.float32 and torch.isfinite(res.x).all()
    # float64 state with float32 weights: autocast casts the network's inputs; the rest stays float64
    op64 = operators.build("inpaint_random", img_size=(3, 16, 16), noise_sigma=0.02).to(torch.float64)
    res64 = invsolve.solve(invsolve.Problem.simulate(op64, x.double(), seed=0), prior, "ddrm", steps=3, seed=0)
    assert res64.x.dtype == torch.float64 and torch.isfinite(res64.x).all()
    out = prior.denoise(x.double(), torch.full((1,), 0.1, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_precision_options_are_checked():
    prior = priors.load("natural-rgb")
    assert prior.precision is None
    with pytest.raises(ValueError, match="precision must be"):
        prior.set_precision("int8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            prior.set_precision("fp16").denoise(torch.rand(1, 3, 8, 8), torch.full((1,), 0.1))
    with pytest.raises(ValueError, match="network prior"):
        priors.load("gmm", precision="bf16")
    assert priors.load_prior(priors.hub.WEIGHTS / "phantom-ct", precision="bf16").precision == "bf16"
