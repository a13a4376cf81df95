"""Trace equivalence: ``dps`` against a transcription of the official DPS sampling loop.

Official code: github.com/DPS2022/diffusion-posterior-sampling (read, then written here in our own words):
- ``guided_diffusion/gaussian_diffusion.py``: ``get_named_beta_schedule("linear", 1000)``;
  ``space_timesteps`` (one section: the float stride (N - 1) / (n - 1) is summed and each partial sum
  rounded); ``SpacedDiffusion`` (the kept steps get betas 1 - abar_k / abar_{previous kept});
  ``_WrappedModel`` (the network sees the original step ``timestep_map[idx]``);
  ``GaussianDiffusion.p_sample_loop`` (img = x_T ~ N(0, I); for idx = n - 1 .. 0: ``p_sample``, then
  the conditioning method on ``out["sample"]`` with the gradient taken w.r.t. img);
  ``DDPM.p_sample`` (posterior mean + exp(log_var / 2) z, no noise at idx = 0; z is drawn before the
  measurement gradient).
- ``guided_diffusion/posterior_mean_variance.py``: ``EpsilonXMeanProcessor`` (x0 = sqrt(1 / abar) x -
  sqrt(1 / abar - 1) eps, clipped to [-1, 1], q-posterior mean coefficients),
  ``FixedSmallVarianceProcessor`` (posterior variance beta (1 - abar_prev) / (1 - abar)).
- ``guided_diffusion/condition_methods.py``: ``PosteriorSampling.conditioning`` (x -= scale * grad)
  and ``ConditioningMethod.grad_and_value`` (gaussian: ||y - A x0||; poisson: the mean over entries
  of ||y - A x0|| / |y|; both norms over the whole batch).

The official code works on images in [-1, 1]: x_net = 2 x - 1, and for a linear A the measurement
there is y_net = 2 y - A(1). Its sampler reads a learned-range variance from the network; the
canonical prior has none, so the transcription uses the fixed-small variance (a documented deviation
of ``dps``). With one sample the batch norm is the per-sample norm; a batch of two checks the other
documented deviation (the norm per sample).
"""

import pytest
import torch
from trace_utils import NoiseStream, Recorder, assert_same_calls, tiny_net, to_ops

import invsolve
from invsolve import operators, paths, priors
from invsolve.solvers.schedules import respace

N = 1000


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """guided diffusion's ``space_timesteps(N, [count])``: summed float stride, rounded."""
    stride = (num_timesteps - 1) / (count - 1) if count > 1 else 1
    taken, cur = [], 0.0
    for _ in range(count):
        taken.append(round(cur))
        cur += stride
    return sorted(set(taken))


class OfficialDPS:
    """The DDPM sampler of the DPS code, respaced to ``steps``, with the ``ps`` conditioning."""

    def __init__(self, steps: int):
        betas = torch.linspace(1e-4, 0.02, N, dtype=torch.float64)
        abar_full = torch.cumprod(1 - betas, 0)
        kept = space_timesteps(N, steps)
        self.timestep_map, new_betas, last = [], [], 1.0
        for i in range(N):
            if i in kept:
                new_betas.append(1 - abar_full[i] / last)
                last = abar_full[i]
                self.timestep_map.append(i)
        b = torch.stack(new_betas)
        self.abar = torch.cumprod(1 - b, 0)
        self.abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.abar[:-1]])
        self.coef1 = b * self.abar_prev.sqrt() / (1 - self.abar)
        self.coef2 = (1 - self.abar_prev) * (1 - b).sqrt() / (1 - self.abar)
        self.var = b * (1 - self.abar_prev) / (1 - self.abar)

    def sample(self, net, noise: NoiseStream, shape, measurement, A, scale: float,
               noiser: str = "gaussian", per_sample: bool = False):
        img = noise.randn(*shape)
        for idx in reversed(range(len(self.timestep_map))):
            img = img.requires_grad_()
            t = torch.full((img.shape[0],), float(self.timestep_map[idx]), dtype=torch.float64)
            eps = net(img, t)
            x0 = ((1 / self.abar[idx]).sqrt() * img - (1 / self.abar[idx] - 1).sqrt() * eps).clamp(-1, 1)
            mean = self.coef1[idx] * x0 + self.coef2[idx] * img
            z = noise.randn(*shape)
            sample = mean + torch.exp(0.5 * torch.log(self.var[idx])) * z if idx != 0 else mean
            diff = measurement - A(x0)
            if per_sample:  # invsolve's documented deviation: one norm per sample
                norm = diff.flatten(1).norm(dim=1).sum()
            elif noiser == "gaussian":
                norm = torch.linalg.norm(diff)
            else:  # grad_and_value's poisson branch
                norm = (torch.linalg.norm(diff) / measurement.abs()).mean()
            (grad,) = torch.autograd.grad(norm, img)
            img = (sample - scale * grad).detach()
        return img


def _prior(net):
    return priors.NetworkPrior(Recorder(net), "eps", paths.VPDiscrete(), data_range=(-1, 1))


def to_double(op):
    """The operator in float64 (complex buffers, e.g. a filter's FFT, to complex128: ``.to(float64)``
    would drop their imaginary part)."""
    return op._apply(lambda t: t.to(torch.complex128) if t.is_complex()
                     else t.double() if t.is_floating_point() else t)


def _problem(task, shape=(3, 16, 16), batch=1, **kw):
    op = to_double(operators.build(task, img_size=shape, **kw))
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return op, invsolve.Problem.simulate(op, x, seed=2)


def _y_net(op, problem):
    return 2 * problem.y - op.A(torch.ones(1, *problem.x_shape, dtype=torch.float64))


CASES = [  # task, operator settings, zeta (the paper preset of the task), steps
    ("sr4", {"noise_sigma": 0.025}, 0.3, 10),
    ("inpaint_random", {"missing": 0.5, "noise_sigma": 0.025}, 0.5, 21),  # 21: summed-stride rounding
    ("blur_gauss", {"kernel_size": 5, "std": 1.0, "noise_sigma": 0.025}, 0.3, 12),
    ("inpaint_box", {"noise_sigma": 0.0}, 0.5, 7),
]


@pytest.mark.parametrize(("task", "kw", "zeta", "steps"), CASES)
def test_dps_gaussian_matches_the_official_loop(task, kw, zeta, steps):
    net = tiny_net()
    prior = _prior(net)
    op, problem = _problem(task, **kw)
    res = invsolve.solve(problem, prior, "dps", preset="paper", steps=steps, noiseless_projection=False, seed=3)
    assert res.nfe == steps
    theirs = Recorder(net)
    out = OfficialDPS(steps).sample(theirs, NoiseStream(3, 1), problem.x_shape, _y_net(op, problem),
                                    op.A, zeta)
    assert_same_calls(prior.module, theirs)
    torch.testing.assert_close(res.x, to_ops(out), rtol=0, atol=1e-5)


def test_dps_poisson_code_form_matches_the_official_branch():
    net = tiny_net()
    prior = _prior(net)
    op, problem = _problem("blur_gauss", kernel_size=5, std=1.0, poisson_gain=0.05)
    assert problem.noise.kind == "poisson"
    res = invsolve.solve(problem, prior, "dps", steps=10, seed=4, zeta=0.3, likelihood="poisson_code")
    theirs = Recorder(net)
    out = OfficialDPS(10).sample(theirs, NoiseStream(4, 1), problem.x_shape, _y_net(op, problem),
                                 op.A, 0.3, noiser="poisson")
    assert_same_calls(prior.module, theirs)
    torch.testing.assert_close(res.x, to_ops(out), rtol=0, atol=1e-5)


def test_dps_batch_uses_per_sample_norms():
    """Two samples at once: invsolve equals the official loop with the norm taken per sample."""
    net = tiny_net()
    prior = _prior(net)
    op, problem = _problem("sr4", batch=2, noise_sigma=0.025)
    res = invsolve.solve(problem, prior, "dps", steps=8, seed=[5, 6], zeta=0.3)
    theirs = Recorder(net)
    out = OfficialDPS(8).sample(theirs, NoiseStream([5, 6], 2), problem.x_shape, _y_net(op, problem),
                                op.A, 0.3, per_sample=True)
    assert_same_calls(prior.module, theirs)
    torch.testing.assert_close(res.x, to_ops(out), rtol=0, atol=1e-5)


def test_guided_respacing_is_space_timesteps():
    assert all(respace(N, n, "guided") == space_timesteps(N, n) for n in range(1, N + 1))


def test_paper_presets_name_their_config():
    table = invsolve.solvers.get("dps").presets["paper"]
    assert {k: p.values["zeta"] for k, p in table.items()} == {
        "sr4": 0.3, "blur_gauss": 0.3, "blur_motion": 0.3, "inpaint_random": 0.5, "inpaint_box": 0.5,
        "phase_retrieval": 1.0}
    assert all(p.values["steps"] == 1000 and "configs/" in p.source for p in table.values())
