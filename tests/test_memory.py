"""No solver keeps an autograd graph (or any network input) alive from one step to the next.

The network saves its input for the backward pass, so an input that outlives its step means a
graph (or a stray reference) kept across steps, and memory that grows with the number of steps.
Each network input is watched through a weak reference; the number of earlier inputs still alive
at a call must not grow with the number of steps (the 3-step and the 8-step runs see the same
count). benchmarks/memory.py measures the peak memory itself.
"""

import gc
import weakref

import pytest
import torch

import invsolve
from invsolve import operators, priors, solvers

FAST = {"daps": {"mcmc_steps": 2, "ode_steps": 2}, "dflow": {"ode_steps": 2},
        "mcgdiff": {"particles": 2}, "tds": {"particles": 2}}


@pytest.fixture(scope="module")
def net_prior():
    torch.manual_seed(0)
    net = priors.UNet(in_channels=3, channels=8, channel_mult=(1, 2), num_res_blocks=1, groups=4)
    return priors.NetworkPrior(priors.EDMPrecond(net), parameterization="x0", path="ve",
                               data_range=(-1, 1)).eval().requires_grad_(False)


def most_alive(prior, name: str, steps: int) -> int:
    """The largest number of earlier network inputs still alive at any network call."""
    refs: list[weakref.ref] = []
    most = 0

    def watch(module, args):
        nonlocal most
        gc.collect()
        most = max(most, sum(r() is not None for r in refs))
        refs.append(weakref.ref(args[0]))

    handle = prior.module.register_forward_pre_hook(watch)
    try:
        op = operators.build("inpaint_random", img_size=(3, 8, 8), missing=0.5, noise_sigma=0.05)
        problem = invsolve.Problem.simulate(op, torch.rand(2, 3, 8, 8), seed=0)
        invsolve.solve(problem, prior, name, steps=steps, seed=0, **FAST.get(name, {}))
    finally:
        handle.remove()
    return most


@pytest.mark.parametrize("name", sorted(solvers.available(baselines=False)))
def test_no_graph_kept_across_steps(name, net_prior):
    short, long = most_alive(net_prior, name, 3), most_alive(net_prior, name, 8)
    assert long <= short, f"{name}: {short} earlier network inputs alive after 3 steps, {long} after 8"
