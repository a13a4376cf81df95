"""Darcy flow pairs (a, u): a thresholded Neumann GRF (a = 12 where the field >= 0, else 3) and the
pressure u solving -div(a grad u) = 1, u = 0 on the boundary (FNO, arXiv 2010.08895; DiffusionPDE,
arXiv 2406.17763). Solved with ``invsolve.operators.pde.darcy_solve`` (same discretisation as the
``darcy`` operator, so a pair is an exact noiseless (x, A(x)) of the inverse problem).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from invsolve.operators.pde.darcy import darcy_solve

from .cache import load_or_generate
from .grf import grf_neumann


def darcy_permeability(n: int, size: int = 64, seed: int = 0, alpha: float = 2.0, tau: float = 3.0,
                       a_high: float = 12.0, a_low: float = 3.0, start: int = 0) -> Tensor:
    """Permeabilities ``a`` (n, size, size) float64: samples ``start .. start+n-1`` of the thresholded
    Neumann GRF set with ``seed`` (a = a_high where the field >= 0, else a_low)."""
    field = grf_neumann(n, size, alpha, tau, seed=seed, start=start)
    return torch.where(field >= 0, a_high, a_low).to(torch.float64)


def generate_darcy(n: int, size: int = 64, seed: int = 0, alpha: float = 2.0, tau: float = 3.0,
                   a_high: float = 12.0, a_low: float = 3.0, face: str = "harmonic", chunk: int = 64,
                   progress: bool = True) -> dict[str, Tensor]:
    """n pairs: ``a`` and ``u``, each (n, 1, size, size) float32 (computed in float64)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    a_out, u_out = [], []
    with tqdm(total=n, desc=f"darcy {size}x{size}", disable=not progress or n < 2 * chunk) as bar:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            a = darcy_permeability(m, size, seed, alpha, tau, a_high, a_low, start=start)
            with torch.no_grad():
                u = darcy_solve(a, 1.0, face=face, solver="direct")
            a_out.append(a)
            u_out.append(u)
            bar.update(m)
    return {"a": torch.cat(a_out)[:, None].float(), "u": torch.cat(u_out)[:, None].float()}


def darcy_dataset(n: int, size: int = 64, seed: int = 0, path: str | Path | None = None,
                  force: bool = False, **kw) -> dict[str, Tensor]:
    """``generate_darcy`` cached at ``path`` (.pt/.npz), regenerated when any parameter changes."""
    params = {"kind": "darcy", "n": n, "size": size, "seed": seed, "alpha": kw.get("alpha", 2.0),
              "tau": kw.get("tau", 3.0), "a_high": kw.get("a_high", 12.0), "a_low": kw.get("a_low", 3.0),
              "face": kw.get("face", "harmonic"), "f": 1.0}
    gen_kw = {k: v for k, v in params.items() if k not in ("kind", "f")}
    data, _ = load_or_generate(path, params, lambda: generate_darcy(progress=kw.get("progress", True),
                                                                    **gen_kw), force=force)
    return data
