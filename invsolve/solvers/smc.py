"""Shared mechanics of the sequential Monte Carlo solvers (MCGdiff, TDS): particles, weights, chunks.

Every measurement row b carries K particles. All random draws of row b (its K particles' noise and its
resampling uniforms) come from row b's own generator, so a row's particles do not depend on the other
rows of the batch (batch invariance, DESIGN.md). The prior sees the B x K particles in chunks of at
most ``chunk`` inputs; one step counts one NFE however many chunks it takes (one batched denoiser call
evaluates B x K inputs).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from invsolve import paths as P
from invsolve.priors.base import Prior

from .base import CountingPrior


def row_randn(gens: list[torch.Generator], k: int, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Standard normal draws (B, k, *shape): row b from ``gens[b]`` in one call (chunk-independent)."""
    rows = [torch.randn((k, *shape), generator=g, dtype=torch.float64) for g in gens]
    return torch.stack(rows).to(dtype=like.dtype, device=like.device)


def row_rand(gens: list[torch.Generator], like: Tensor) -> Tensor:
    """One uniform [0, 1) draw per row, shape (B,), float64 on like's device."""
    return torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in gens]).to(like.device)


def _uncounted(prior: Prior) -> Prior:
    return prior.inner if isinstance(prior, CountingPrior) else prior


def _count(prior: Prior) -> None:
    if isinstance(prior, CountingPrior):
        prior.nfe += 1


def x0_chunked(prior: Prior, x: Tensor, t: Tensor, path: P.Path, chunk: int) -> Tensor:
    """E[x0 | x_t] for (N, ...) particles in chunks of ``chunk``; one NFE whatever the chunk count."""
    inner = _uncounted(prior)
    with torch.no_grad():
        out = torch.cat([inner.x0_at(c, t, path) for c in x.split(chunk)])
    _count(prior)
    return out


def x0_grad_chunked(prior: Prior, x: Tensor, t: Tensor, path: P.Path, chunk: int,
                    log_twist: Callable[[Tensor, slice], Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(x0_hat, log twist, grad_x log twist) for (N, ...) particles in chunks; one NFE.

    ``log_twist(x0_hat, rows)`` returns the (n,) log twist of the particles ``rows`` (a slice of the N).
    Each chunk runs its own forward and backward pass, so gradients are per particle.
    """
    inner = _uncounted(prior)
    x0s, logs, grads = [], [], []
    for start in range(0, x.shape[0], chunk):
        rows = slice(start, min(start + chunk, x.shape[0]))
        with torch.enable_grad():
            xc = x[rows].detach().requires_grad_(True)
            x0 = inner.x0_at(xc, t, path)
            lt = log_twist(x0, rows)
            (g,) = torch.autograd.grad(lt.sum(), xc)
        x0s.append(x0.detach())
        logs.append(lt.detach())
        grads.append(g)
    _count(prior)
    return torch.cat(x0s), torch.cat(logs), torch.cat(grads)


def normalise(logw: Tensor) -> Tensor:
    """Log weights (B, K) shifted so that each row's weights sum to 1."""
    return logw - torch.logsumexp(logw, dim=1, keepdim=True)


def ess(logw: Tensor) -> Tensor:
    """Effective sample size 1 / sum_k w_k^2 of each row's normalised weights, (B,)."""
    return torch.exp(-torch.logsumexp(2 * normalise(logw), dim=1))


def systematic(logw: Tensor, u: Tensor, n: int | None = None) -> Tensor:
    """Systematic resampling (Kitagawa 1996): n ancestor indices per row (B, n) from weights (B, K)
    and one uniform per row ``u`` (B,). Equal weights give every particle exactly once."""
    w = torch.exp(normalise(logw.double()))
    n = w.shape[1] if n is None else n
    cdf = torch.cumsum(w, dim=1)
    cdf[:, -1] = 1.0  # rounding must not leave a position beyond the last particle
    pos = (torch.arange(n, dtype=torch.float64, device=w.device)[None] + u.to(w)[:, None]) / n
    return torch.searchsorted(cdf, pos).clamp_max(w.shape[1] - 1)


def gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """x (B, K, ...) indexed per row by idx (B, n) -> (B, n, ...)."""
    flat = idx.reshape(idx.shape[0], idx.shape[1], *([1] * (x.ndim - 2)))
    return torch.take_along_dim(x, flat.expand(-1, -1, *x.shape[2:]), dim=1)


def pick_one(particles: Tensor, logw: Tensor, u: Tensor) -> Tensor:
    """One draw per row from its weighted population: (B, K, ...) -> (B, ...)."""
    idx = systematic(logw, u, 1)
    return gather_rows(particles, idx)[:, 0]


def pooled_samples(particles: Tensor, logw: Tensor, n: int, seed: int = 0) -> Tensor:
    """n samples from R weighted populations (R, K, ...), each run giving an equal share (systematic
    resampling within a run): the way SMC papers use all particles of a few runs as a sample set."""
    r = particles.shape[0]
    per = math.ceil(n / r)
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(r, generator=g, dtype=torch.float64)
    idx = systematic(logw.to(particles.device), u.to(particles.device), per)
    out = gather_rows(particles, idx).reshape(r * per, *particles.shape[2:])
    keep = torch.randperm(r * per, generator=g)[:n].to(particles.device)
    return out[keep]


def scalar_time(t: Tensor, like: Tensor) -> Tensor:
    """A scalar time as a 0-d tensor of like's dtype and device (x0_at expands it)."""
    return torch.as_tensor(t, dtype=like.dtype, device=like.device)
