"""``invsolve data``: generate (or reuse the cache of) a simulated data set.

    invsolve data darcy --n 2000 --size 64 --out data/darcy64.pt [--seed 0] [--alpha 2] [--tau 3]
    invsolve data ns --n 100 --size 64 --out data/ns64.pt [--snapshots 10] [--t-final 1] [--burn-in 5]

The file (.pt or .npz) stores the generator's parameters; running the same command again loads it,
changing any parameter regenerates it (``--force`` always regenerates).
"""

from __future__ import annotations

import argparse
import time

import torch


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="invsolve data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kind", required=True)
    for name, hlp in (("darcy", "Darcy (a, u) pairs, a in {12, 3} from a thresholded GRF"),
                      ("ns", "2-D Navier-Stokes vorticity trajectories (Re=200, Kolmogorov forcing)")):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("--n", type=int, required=True, help="number of samples")
        s.add_argument("--size", type=int, default=64, help="grid points per side")
        s.add_argument("--out", required=True, help="output file, .pt or .npz")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--force", action="store_true", help="regenerate even if the cache matches")
        s.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (1 is fastest on a busy machine)")
        s.add_argument("--no-progress", action="store_true")
    d = sub.choices["darcy"]
    d.add_argument("--alpha", type=float, default=2.0)
    d.add_argument("--tau", type=float, default=3.0)
    d.add_argument("--face", choices=("harmonic", "arithmetic"), default="harmonic")
    s = sub.choices["ns"]
    s.add_argument("--snapshots", type=int, default=10)
    s.add_argument("--t-final", type=float, default=1.0)
    s.add_argument("--re", type=float, default=200.0)
    s.add_argument("--dt", type=float, default=5e-3)
    s.add_argument("--burn-in", type=float, default=5.0,
                   help="time units the GRF initial state is evolved before t = 0 (0: raw GRF)")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``invsolve data``; returns the exit status."""
    args = _parser().parse_args(argv)
    if not args.out.endswith((".pt", ".npz")):
        print(f"invsolve data: --out must end in .pt or .npz, got {args.out!r}")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    from .cache import read_cache
    from .darcy import darcy_dataset
    from .ns import ns_dataset

    t0 = time.perf_counter()
    progress = not args.no_progress
    try:
        if args.kind == "darcy":
            data = darcy_dataset(args.n, args.size, args.seed, path=args.out, force=args.force,
                                 alpha=args.alpha, tau=args.tau, face=args.face, progress=progress)
        else:
            data = ns_dataset(args.n, args.size, args.seed, path=args.out, force=args.force,
                              progress=progress, t_final=args.t_final, snapshots=args.snapshots,
                              re=args.re, dt=args.dt, burn_in=args.burn_in)
    except ValueError as err:
        print(f"invsolve data: {err}")
        return 2
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in data.items())
    params, _ = read_cache(args.out)
    print(f"{args.out}: {shapes} ({time.perf_counter() - t0:.1f} s); params {params}")
    return 0
