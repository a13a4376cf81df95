"""Time grids: which of a prior's native times a solver visits, respaced as the official codes do.

A DDPM network is trained at integer steps 0..N-1; samplers with fewer steps pick a subset. The
reference implementations pick it in different ways, and a trace-equivalent solver must pick the same:

- ``"guided"``: guided diffusion's ``space_timesteps(N, "n")`` (used by DPS and MCG): the rounded
  running sum of the stride (N - 1) / (n - 1), so both ends 0 and N - 1 are visited.
- ``"uniform"``: DDIM / DDRM's ``range(0, N, N // n)`` (also RED-diff's ``get_timesteps``, which its
  PiGDM uses): 0, k, 2k, ... (k = N // n), the first n of them; the noisiest step is (n - 1) k.
- ``"linspace"``: n times evenly spaced on [t_min, t_max], rounded to integers.
- ``"quad"``: DiffPIR's quadratic skip (yuanzhi-zhu/DiffPIR, main_ddpir_deblur.py / _sisr.py /
  _inpainting.py, ``skip_type == "quad"``): seq = int(sqrt(linspace(0, N^2, n))), seq[-1] -= 1, and
  the step visited is N - 1 - seq: wide gaps at high noise, dense near t = 0. For n > ~N / 2 the
  official sequence repeats a step; it is kept as it is (every spacing returns n times).

Continuous paths (EDM's VE, continuous VP, flows) have no integer grid: every spacing gives n times
evenly spaced from t_max down to t_min, except "quad": t_max - (t_max - t_min) sqrt(i / (n - 1)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invsolve import paths as P

SPACINGS = ("guided", "uniform", "linspace", "quad")


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
    if spacing == "quad":
        return sorted(_quad_steps(num_train, steps))
    t = torch.linspace(num_train - 1, 0, steps, dtype=torch.float64).round()
    return sorted(int(v) for v in t)


def _quad_steps(num_train: int, steps: int) -> list[int]:
    """DiffPIR's visited steps, noisiest first. np.linspace's i * (stop / (n - 1)) and sqrt are
    reproduced in Python floats (both correctly rounded), so int() truncates as the official."""
    if steps == 1:
        return [num_train - 1]
    stride = num_train**2 / (steps - 1)
    seq = [int(math.sqrt(num_train**2 if i == steps - 1 else i * stride)) for i in range(steps)]
    seq[-1] -= 1
    return [num_train - 1 - s for s in seq]


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
    if spacing == "quad":
        frac = torch.linspace(0, 1, steps, dtype=torch.float64).sqrt()
        return path.t_max - (path.t_max - path.t_min) * frac
    return torch.linspace(path.t_max, path.t_min, steps, dtype=torch.float64)
