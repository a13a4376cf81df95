"""Shared pieces of the trace-equivalence tests (tests/test_trace_*.py).

A trace test runs an independent transcription of a paper's official sampling loop, in the official
code's own conventions (images in [-1, 1], integer DDPM steps, its step-size formulas), beside
invsolve on the same tiny random network and the same noise draws, and checks that the network sees
the same inputs at every call and that the outputs agree (float64, 1e-5).

- ``tiny_net``: a small random UNet (non-zero output layer, so predictions depend on x and t),
  called as ``net(x, t)`` with the network's own time input (DDPM step index, flow time, ...).
- ``Recorder``: wraps a network and records every (input, time, output).
- ``NoiseStream``: the per-sample draws invsolve makes (``invsolve.rng``), in call order, for the
  transcription to consume in the same order.
- ``to_net`` / ``to_ops``: the affine map between operator units [0, 1] and network units [-1, 1];
  for a linear operator A, y_net = s y + c A(1) when x_net = s x + c.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from invsolve.priors.unet import UNet
from invsolve.rng import make_generators, randn

SCALE, SHIFT = 2.0, -1.0  # x_net = 2 x - 1: images in [0, 1] seen by a [-1, 1] network


def tiny_net(channels: int = 3, seed: int = 0, std: float = 0.05) -> nn.Module:
    """A float64 UNet with every weight drawn N(0, std^2) (the zero-initialised output layers of a
    fresh UNet would make the prediction constant)."""
    g = torch.Generator().manual_seed(seed)
    net = UNet(in_channels=channels, channels=8, channel_mult=(1, 2), num_res_blocks=1, groups=4)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net.double().eval().requires_grad_(False)


class Recorder(nn.Module):
    """``net(x, t)`` that keeps every call's (x, t, output), detached, in ``calls``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.calls: list[tuple[Tensor, Tensor, Tensor]] = []

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        out = self.net(x, t)
        self.calls.append((x.detach().clone(), t.detach().clone(), out.detach().clone()))
        return out


class NoiseStream:
    """invsolve's per-sample standard normal draws, in the order a solver makes them."""

    def __init__(self, seed: int | list[int], batch: int, dtype: torch.dtype = torch.float64):
        self.gens = make_generators(seed, batch)
        self.like = torch.empty(0, dtype=dtype)

    def randn(self, *shape: int) -> Tensor:
        """(B, *shape) draws, one generator per sample (what ``Solver.randn`` returns)."""
        return randn(self.gens, tuple(shape), self.like)


def to_net(x: Tensor) -> Tensor:
    return SCALE * x + SHIFT


def to_ops(x_net: Tensor) -> Tensor:
    return (x_net - SHIFT) / SCALE


def assert_same_calls(ours: Recorder, theirs: Recorder, atol: float = 1e-5) -> None:
    """Same number of network calls, same inputs, same times and same outputs at every call."""
    assert len(ours.calls) == len(theirs.calls), (len(ours.calls), len(theirs.calls))
    for k, ((xa, ta, oa), (xb, tb, ob)) in enumerate(zip(ours.calls, theirs.calls)):
        torch.testing.assert_close(ta, tb, rtol=0, atol=atol, msg=lambda m, k=k: f"call {k} times: {m}")
        torch.testing.assert_close(xa, xb, rtol=0, atol=atol, msg=lambda m, k=k: f"call {k} inputs: {m}")
        torch.testing.assert_close(oa, ob, rtol=0, atol=atol, msg=lambda m, k=k: f"call {k} outputs: {m}")
