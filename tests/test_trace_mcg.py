"""Trace equivalence: ``mcg`` against a transcription of the official MCG sampling loop.

Official code: github.com/HJ-harry/MCG_diffusion (read, then written here in our own words):
- ``guided_diffusion/respace.py``: ``space_timesteps`` (summed float stride, rounded) and
  ``SpacedDiffusion`` (betas of the kept steps, the network sees the original step);
- ``guided_diffusion/gaussian_diffusion.py``: ``p_mean_variance`` (x0 from eps, clipped to [-1, 1],
  q-posterior mean), ``p_sample`` (noise z drawn first; none added at index 0),
  ``p_sample_loop_progressive`` with ``sample_method == "MCG"``: img = x_T ~ N(0, I); per step
  norm = ||y * mask - x0_hat * mask|| over the batch, its gradient w.r.t. img masked by (1 - mask),
  and sample <- sample (1 - mask) - grad + q_sample(y, t, z') mask, z' ~ N(0, I) drawn after z;
  q_sample at the step's own index t (the level of the input x_t);
- ``scripts/sample_inpainting.py`` / ``run_inpainting.sh``: y = x * mask in [-1, 1], noiseless,
  ``clip_denoised`` True, ``timestep_respacing`` 1000.

As for DPS, the transcription uses the fixed-small variance where the official sampler reads a
learned-range variance from the network (a documented deviation of ``mcg``).
"""

import pytest
import torch
from trace_utils import NoiseStream, Recorder, assert_same_calls, tiny_net, to_ops

import invsolve
from invsolve import operators, paths, priors

N = 1000


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    stride = (num_timesteps - 1) / (count - 1) if count > 1 else 1
    taken, cur = [], 0.0
    for _ in range(count):
        taken.append(round(cur))
        cur += stride
    return sorted(set(taken))


def official_mcg(net, noise: NoiseStream, shape, cond, mask, steps: int, per_sample: bool = False):
    """The MCG inpainting loop in [-1, 1] units; ``cond`` = y * mask (network units)."""
    betas = torch.linspace(1e-4, 0.02, N, dtype=torch.float64)
    abar_full = torch.cumprod(1 - betas, 0)
    kept = space_timesteps(N, steps)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar_full[kept][:-1]])
    b = 1 - abar_full[kept] / prev
    abar = torch.cumprod(1 - b, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    coef1 = b * abar_prev.sqrt() / (1 - abar)
    coef2 = (1 - abar_prev) * (1 - b).sqrt() / (1 - abar)
    var = b * (1 - abar_prev) / (1 - abar)
    log_var_clipped = torch.log(torch.cat([var[1:2], var[1:]]))
    img = noise.randn(*shape)
    for i in reversed(range(len(kept))):
        img = img.requires_grad_()
        t = torch.full((img.shape[0],), float(kept[i]), dtype=torch.float64)
        eps = net(img, t)
        x0 = ((1 / abar[i]).sqrt() * img - (1 / abar[i] - 1).sqrt() * eps).clamp(-1, 1)
        mean = coef1[i] * x0 + coef2[i] * img
        z = noise.randn(*shape)
        sample = mean + float(i != 0) * torch.exp(0.5 * log_var_clipped[i]) * z
        diff = cond * mask - x0 * mask
        norm = diff.flatten(1).norm(dim=1).sum() if per_sample else torch.norm(diff)
        (grad,) = torch.autograd.grad(norm, img)
        grad = grad * (1 - mask)
        y_t = abar[i].sqrt() * cond + (1 - abar[i]).sqrt() * noise.randn(*shape)  # q_sample(y, t)
        img = (sample * (1 - mask) - grad + y_t * mask).detach()
    return img


def _setup(task, batch=1, shape=(3, 16, 16), **kw):
    net = tiny_net()
    prior = priors.NetworkPrior(Recorder(net), "eps", paths.VPDiscrete(), data_range=(-1, 1))
    op = operators.build(task, img_size=shape, **kw).to(torch.float64)
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    problem = invsolve.Problem.simulate(op, x, seed=2)
    ones = torch.ones(1, *shape, dtype=torch.float64)
    mask = op.A(ones)
    cond = 2 * problem.y - mask  # y in network units: 2 y - A(1)
    return net, prior, op, problem, mask, cond


@pytest.mark.parametrize(("task", "kw", "steps"), [
    ("inpaint_box", {}, 10),
    ("inpaint_random", {"missing": 0.5}, 21),
])
def test_mcg_matches_the_official_inpainting_loop(task, kw, steps):
    net, prior, _, problem, mask, cond = _setup(task, **kw)
    res = invsolve.solve(problem, prior, "mcg", preset="paper", steps=steps, noiseless_projection=False, seed=3)
    theirs = Recorder(net)
    out = official_mcg(theirs, NoiseStream(3, 1), problem.x_shape, cond, mask, steps)
    assert_same_calls(prior.module, theirs)
    torch.testing.assert_close(res.x, to_ops(out), rtol=0, atol=1e-5)


def test_mcg_batch_uses_per_sample_norms():
    net, prior, _, problem, mask, cond = _setup("inpaint_random", batch=2, missing=0.5,
                                                noise_sigma=0.025)
    res = invsolve.solve(problem, prior, "mcg", steps=8, projection="hard", seed=[5, 6])
    theirs = Recorder(net)
    out = official_mcg(theirs, NoiseStream([5, 6], 2), problem.x_shape, cond, mask, 8, per_sample=True)
    assert_same_calls(prior.module, theirs)
    torch.testing.assert_close(res.x, to_ops(out), rtol=0, atol=1e-5)


def test_mcg_measured_part_ends_at_the_noised_measurement():
    """Default: A x = alpha_0 y + sigma_0 A z (the official last projection, sigma_0 = 0.005 in [0, 1]
    units); y_level="next": A x = y exactly."""
    _, prior, op, problem, *_ = _setup("inpaint_random", missing=0.5)
    out = invsolve.solve(problem, prior, "mcg", steps=6, noiseless_projection=False, seed=0).x
    gap = (op.A(out) - problem.y).abs().max()
    assert 1e-4 < gap < 0.03
    exact = invsolve.solve(problem, prior, "mcg", steps=6, seed=0, y_level="next").x
    torch.testing.assert_close(op.A(exact), problem.y, atol=1e-10, rtol=0)
