"""Trace equivalence: ``ddim`` against a transcription of the official DDIM sampler.

Official code: github.com/ermongroup/ddim (read, then written here in our own words):
- ``runners/diffusion.py``: linear betas 1e-4 .. 0.02 over N = 1000 steps; ``sample_image`` with
  ``skip_type`` "uniform": skip = N // n, seq = range(0, N, skip); x_T ~ N(0, I);
- ``functions/denoising.py``: ``compute_alpha`` (abar of step i, and 1 for step -1) and
  ``generalized_steps``: for (i, j) over (seq, [-1] + seq[:-1]) reversed: e = model(x, i),
  x0 = (x - e sqrt(1 - a_i)) / sqrt(a_i) (not clipped), c1 = eta sqrt((1 - a_i / a_j)(1 - a_j) / (1 - a_i)),
  c2 = sqrt(1 - a_j - c1^2), x <- sqrt(a_j) x0 + c1 z + c2 e with z ~ N(0, I) drawn at every step.
"""

import pytest
import torch
from trace_utils import NoiseStream, Recorder, assert_same_calls, tiny_net, to_ops

import invsolve
from invsolve import operators, paths, priors
from invsolve.solvers.schedules import respace

N = 1000


def generalized_steps(net, noise: NoiseStream, shape, steps: int, eta: float):
    betas = torch.linspace(1e-4, 0.02, N, dtype=torch.float64)
    padded = torch.cumprod(1 - torch.cat([torch.zeros(1, dtype=torch.float64), betas]), 0)

    def alpha(i):  # compute_alpha: the cumulative product at index i + 1 of the padded betas
        return padded[i + 1]

    seq = list(range(0, N, N // steps))
    seq_next = [-1, *seq[:-1]]
    x = noise.randn(*shape)
    for i, j in zip(reversed(seq), reversed(seq_next)):
        at, at_next = alpha(i), alpha(j)
        e = net(x, torch.full((x.shape[0],), float(i), dtype=torch.float64))
        x0 = (x - e * (1 - at).sqrt()) / at.sqrt()
        c1 = eta * ((1 - at / at_next) * (1 - at_next) / (1 - at)).sqrt()
        c2 = (1 - at_next - c1**2).sqrt()
        z = noise.randn(*shape) if eta > 0 else torch.zeros_like(x)  # unused when eta = 0
        x = at_next.sqrt() * x0 + c1 * z + c2 * e
    return x


@pytest.mark.parametrize(("eta", "steps", "batch"), [(0.0, 10, 1), (1.0, 20, 2), (0.5, 8, 1)])
def test_ddim_matches_generalized_steps(eta, steps, batch):
    net = tiny_net()
    prior = priors.NetworkPrior(Recorder(net), "eps", paths.VPDiscrete(), data_range=(-1, 1))
    op = operators.build("denoise", img_size=(3, 16, 16), noise_sigma=0.1).to(torch.float64)
    x = torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    problem = invsolve.Problem.simulate(op, x, seed=2)
    res = invsolve.solve(problem, prior, "ddim", steps=steps, eta=eta, seed=3)
    theirs = Recorder(net)
    out = generalized_steps(theirs, NoiseStream(3, batch), problem.x_shape, steps, eta)
    assert_same_calls(prior.module, theirs)
    torch.testing.assert_close(res.x, to_ops(out), rtol=0, atol=1e-5)


def test_uniform_respacing_is_the_official_skip_when_steps_divide_n():
    for n in (1, 2, 4, 5, 8, 10, 20, 25, 50, 100, 125, 200, 250, 500, 1000):
        assert respace(N, n, "uniform") == list(range(0, N, N // n))
    assert len(range(0, N, N // 7)) == 8 and len(respace(N, 7, "uniform")) == 7  # documented deviation


def test_paper_preset_is_the_official_default():
    assert invsolve.solvers.get("ddim").preset_values("paper", "sr4") == {
        "steps": 1000, "eta": 0.0, "spacing": "uniform"}
