"""The trainer: exact resumption (train N, stop, resume to 2N == uninterrupted 2N) and prior.json."""

import json

import pytest
import torch
from invsolve.priors.unet import load_prior

from invsolve.train import TrainConfig, main, train

TINY = TrainConfig(data="natural-rgb", channels=8, channel_mult=(1, 2), num_res_blocks=1, batch=4,
                   crop=16, ckpt_every=3, progress=False, warmup=2, threads=1)


@pytest.mark.parametrize("objective", ["edm", "flow"])
def test_resume_is_exact(tmp_path, objective):
    n = 6
    full = train(TINY, out=str(tmp_path / "full"), steps=2 * n, objective=objective)
    train(TINY, out=str(tmp_path / "half"), steps=n, objective=objective)
    resumed = train(TINY, out=str(tmp_path / "half"), steps=2 * n, objective=objective)
    assert resumed["losses"] == full["losses"]
    for a, b in zip(full["net"].parameters(), resumed["net"].parameters()):
        assert torch.equal(a, b)
    for a, b in zip(full["ema"], resumed["ema"]):
        assert torch.equal(a, b)


def test_resume_refuses_other_config(tmp_path):
    train(TINY, out=str(tmp_path / "r"), steps=2)
    with pytest.raises(ValueError, match="different configuration"):
        train(TINY, out=str(tmp_path / "r"), steps=4, lr=1.0)


def test_cli_writes_loadable_prior(tmp_path):
    out = tmp_path / "cli"
    assert main(["--data", "natural-rgb", "--out", str(out), "--steps", "2", "--channels", "8",
                 "--channel-mult", "1", "2", "--num-res-blocks", "1", "--batch", "2", "--crop", "16",
                 "--no-progress", "--threads", "1"]) == 0
    info = json.loads((out / "prior.json").read_text())
    assert info["steps"] == 2 and info["command"].startswith("invsolve train --data natural-rgb")
    assert info["split"]["test"] == ["chelsea"]
    assert info["reproduce"].startswith("invsolve train")
    prior = load_prior(out)
    x = torch.rand(1, 3, 20, 20)
    assert prior.denoise(x, torch.tensor([0.1])).shape == x.shape


def test_flow_run_loads_as_velocity_prior(tmp_path):
    res = train(TINY, out=str(tmp_path / "flow"), steps=2, objective="flow")
    prior = load_prior(res["out"])
    assert prior.parameterization == "velocity" and prior.info["objective"] == "flow"
    x, sigma = torch.rand(2, 3, 16, 16), torch.tensor([0.1, 0.5])
    t = (2 * sigma / (1 + 2 * sigma))[:, None, None, None]  # data at t = 0, [-1, 1] units
    x_t = (1 - t) * (2 * x - 1)
    with torch.no_grad():
        u = prior.module(x_t, t.flatten())
        torch.testing.assert_close(prior.denoise(x, sigma), (x_t - t * u + 1) / 2)


def test_darcy_training_set_is_in_units_of_a(tmp_path):
    from invsolve.priors.datasets import darcy_fields, training_data

    from invsolve.data import generate_darcy

    sampler, info = training_data("darcy", 64)
    assert info["units"] == [3.0, 12.0] and sampler.channels == 1
    patch = sampler.sample(4, torch.Generator().manual_seed(0))
    assert patch.shape == (4, 1, 64, 64) and set(torch.unique(patch).tolist()) == {0.0, 1.0}
    train_a, test_a = darcy_fields(3, "train"), darcy_fields(3, "test")
    assert torch.equal(train_a, generate_darcy(3, 64, seed=0, progress=False)["a"])  # the PDE issue's fields
    assert not torch.equal(train_a, test_a)
    # a run on it records the units, so the loaded prior denoises in units of a
    res = train(TINY, data="darcy", crop=16, out=str(tmp_path / "d"), steps=1)
    prior = load_prior(res["out"])
    assert prior.info["units"] == [3.0, 12.0]
    assert prior.scale * 3.0 + prior.shift == pytest.approx(-1.0)
    assert prior.scale * 12.0 + prior.shift == pytest.approx(1.0)
