"""Time grids: which of a prior's native times a solver visits, respaced as the official codes do.

A DDPM network is trained at integer steps 0..N-1; samplers with fewer steps pick a subset. The
reference implementations pick it in different ways, and a trace-equivalent solver must pick the same:

- ``"guided"``: guided diffusion's ``space_timesteps(N, "n")`` (used by DPS, MCG, PiGDM in RED-diff's
  code): round(i (N - 1) / (n - 1)) for i = 0..n-1, so both ends 0 and N - 1 are visited.
- ``"uniform"``: DDIM / DDRM's ``range(0, N, N // n)``: 0, k, 2k, ... (k = N // n), the first n of them;
  the noisiest step is (n - 1) k, not N - 1.
- ``"linspace"``: n times evenly spaced on [t_min, t_max], rounded to integers.

Continuous paths (EDM's VE, continuous VP, flows) have no integer grid: every spacing gives n times
evenly spaced from t_max down to t_min.
"""

from __future__ import annotations

import torch
from torch import Tensor

from invsolve import paths as P

SPACINGS = ("guided", "uniform", "linspace")


def respace(num_train: int, steps: int, spacing: str = "guided") -> list[int]:
    """``steps`` integer timesteps out of ``num_train``, increasing, picked as ``spacing`` says."""
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    if not 1 <= steps <= num_train:
        raise ValueError(f"{steps} steps do not fit the {num_train} steps of the discrete path")
    if spacing == "guided":
        stride = (num_train - 1) / (steps - 1) if steps > 1 else 1
        # space_timesteps adds the float stride up (cur_idx += frac_stride) and rounds each partial
        # sum; round(i * stride) differs from that at exact halves (N = 1000: 278 of the step counts
        # 1..1000, e.g. 21), so the sum is reproduced as it is.
        picked, cur = [], 0.0
        for _ in range(steps):
            picked.append(round(cur))
            cur += stride
        return sorted(set(picked))
    if spacing == "uniform":
        return list(range(0, num_train, num_train // steps))[:steps]
    t = torch.linspace(num_train - 1, 0, steps, dtype=torch.float64).round()
    return sorted(int(v) for v in t)


def timesteps(path: P.Path, steps: int, spacing: str = "guided") -> Tensor:
    """The times a solver visits on ``path`` (float64, decreasing, length ``steps``).

    Discrete DDPM paths (also inside a ``ScaledPath``) get integer steps by ``respace``; continuous
    paths ``steps`` times evenly spaced from t_max to t_min.
    """
    base = P.base_of(path)
    if isinstance(base, P.VPDiscrete):
        return torch.tensor(respace(base.num_steps, steps, spacing)[::-1], dtype=torch.float64)
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    return torch.linspace(path.t_max, path.t_min, steps, dtype=torch.float64)
