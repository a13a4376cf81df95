"""Distances between sample sets and image metrics used by the experiments."""

from __future__ import annotations

import torch
from torch import Tensor


def sliced_wasserstein(a: Tensor, b: Tensor, n_directions: int = 100, seed: int = 0, p: int = 2) -> float:
    """Sliced p-Wasserstein distance between two empirical distributions in R^d.

    a (n, d), b (m, d). Both sets are projected on ``n_directions`` random unit directions (seeded); the
    1-D distance between the projections is computed from quantile functions at max(n, m) levels; the
    result is (mean over directions of W_p^p)^(1/p) (Bonneel et al. 2015). Written by hand (a dozen lines)
    instead of adding POT as a dependency.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (n, d) and (m, d) sample sets, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double().cpu(), b.double().cpu()
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(a.shape[1], n_directions, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, pb = torch.sort(a @ dirs, dim=0).values, torch.sort(b @ dirs, dim=0).values
    n = max(len(pa), len(pb))
    levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    qa, qb = _quantiles(pa, levels), _quantiles(pb, levels)
    return float(((qa - qb).abs() ** p).mean() ** (1 / p))


def _quantiles(sorted_proj: Tensor, levels: Tensor) -> Tensor:
    """Empirical quantile function (left-continuous step) of sorted samples at the given levels."""
    n = len(sorted_proj)
    idx = torch.clamp((levels * n).floor().long(), 0, n - 1)
    return sorted_proj[idx]


def psnr(x_hat: Tensor, x: Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole batch (images in [0, data_range])."""
    from deepinv.loss.metric import PSNR

    return float(PSNR(max_pixel=data_range)(x_hat.float(), x.float()).mean())
