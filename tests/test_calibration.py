"""Calibration diagnostics: exact samples are calibrated, over- and underconfident ones are not."""

import torch

from invsolve.evaluation.calibration import (
    gmm_calibration,
    interval_coverage,
    marginal_cdf,
    mode_weights,
    pixel_coverage,
)
from invsolve.evaluation.gmm import make_case


def test_marginal_cdf_matches_samples():
    post = make_case(8, 2, 1).posterior
    x = post.sample(20000, seed=0)
    point = x[:1].reshape(-1)
    emp = (x <= point).double().mean(0)
    torch.testing.assert_close(marginal_cdf(post, point), emp, atol=0.015, rtol=0)


def test_exact_samples_are_calibrated_and_the_prior_is_not():
    case = make_case(8, 2, 1)
    exact = gmm_calibration(case.posterior.sample(2000, seed=3), case.posterior)
    assert abs(exact["cov50"] - 0.5) < 0.03 and abs(exact["cov90"] - 0.9) < 0.02
    assert exact["mode_tv"] < 0.03
    prior = gmm_calibration(case.prior.sample(2000, seed=3), case.posterior)
    assert prior["mode_tv"] > 0.5 and prior["dev50"] > 0.1
    # samples squeezed towards their mean are overconfident: their intervals hold less mass
    x = case.posterior.sample(2000, seed=4)
    tight = interval_coverage(x.mean(0) + 0.3 * (x - x.mean(0)), case.posterior)
    assert (tight[0.9] < 0.85).all()


def test_mode_weights_hard_and_soft():
    post = make_case(8, 1, 0).posterior
    x = post.sample(4000, seed=1)
    for hard in (False, True):
        assert (mode_weights(x, post, hard=hard) - post.weights.double()).abs().max() < 0.03


def test_pixel_coverage():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 16, 16, generator=g)
    x_true = mean + torch.randn(3, 16, 16, generator=g)
    good = pixel_coverage(mean + torch.randn(400, 3, 16, 16, generator=g), x_true)
    assert abs(good["z90"] - 0.9) < 0.04 and abs(good["q50"] - 0.5) < 0.06
    assert abs(good["z_rms"] - 1) < 0.1
    sharp = pixel_coverage(mean + 0.3 * torch.randn(400, 3, 16, 16, generator=g), x_true)
    assert sharp["z90"] < 0.5 and sharp["z_rms"] > 2
