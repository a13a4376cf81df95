"""2-D Navier-Stokes vorticity trajectories on [0, 2 pi)^2 (InverseBench setup, arXiv 2503.11043:
Re = 200, Kolmogorov forcing -4 cos(4 y)), simulated with ``invsolve.operators.pde.NSSolver`` (the
``navier_stokes`` operator's solver).

Initial states: a periodic GRF (FNO's, arXiv 2010.08895: alpha = 2.5, tau = 7) evolved for ``burn_in``
time units under the forcing (default 5). The raw GRF (std ~0.1) is tiny next to the forced response
(~4 per time unit), so without burn-in w(1) is almost the laminar shear -4 cos(4y) t and says little
about w0; after ~3-5 time units the laminar Kolmogorov flow has gone unstable and the states are O(1-10)
turbulent fields, as in InverseBench's figures. ``burn_in=0`` gives FNO-style raw GRF initial states.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from invsolve.operators.pde.navier_stokes import NSSolver

from .cache import load_or_generate
from .grf import grf_periodic


def generate_ns(n: int, size: int = 64, seed: int = 0, t_final: float = 1.0, snapshots: int = 10,
                re: float = 200.0, dt: float = 5e-3, alpha: float = 2.5, tau: float = 7.0,
                sigma: float | None = None, burn_in: float = 5.0, chunk: int = 16,
                progress: bool = True) -> dict[str, Tensor]:
    """n trajectories: ``w`` (n, snapshots+1, size, size) float32 at times ``t`` (snapshots+1,),
    t measured from the end of the burn-in (t = 0 is the initial state of the inverse problem)."""
    if n < 1 or snapshots < 1:
        raise ValueError(f"need n >= 1 and snapshots >= 1, got n={n}, snapshots={snapshots}")
    solver = NSSolver(size, nu=1.0 / re, dt=dt)
    out = []
    with tqdm(total=n, desc=f"navier-stokes {size}x{size}", disable=not progress or n < 2 * chunk) as bar:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            w0 = grf_periodic(m, size, alpha, tau, sigma, seed=seed, start=start)
            with torch.no_grad():
                if burn_in > 0:
                    w0 = solver.evolve(w0, burn_in)
                out.append(solver.trajectory(w0, t_final, snapshots).float())
            bar.update(m)
    return {"w": torch.cat(out), "t": torch.linspace(0, t_final, snapshots + 1)}


def ns_dataset(n: int, size: int = 64, seed: int = 0, path: str | Path | None = None,
               force: bool = False, progress: bool = True, **kw) -> dict[str, Tensor]:
    """``generate_ns`` cached at ``path`` (.pt/.npz), regenerated when any parameter changes."""
    defaults = {"t_final": 1.0, "snapshots": 10, "re": 200.0, "dt": 5e-3, "alpha": 2.5, "tau": 7.0,
                "sigma": None, "burn_in": 5.0}
    unknown = set(kw) - set(defaults)
    if unknown:
        raise TypeError(f"unknown ns_dataset parameters {sorted(unknown)}")
    params = {"kind": "ns", "n": n, "size": size, "seed": seed, **defaults, **kw}
    gen_kw = {k: v for k, v in params.items() if k != "kind"}
    data, _ = load_or_generate(path, params, lambda: generate_ns(progress=progress, **gen_kw), force=force)
    return data
