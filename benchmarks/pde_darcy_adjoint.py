"""Darcy gradient: adjoint state (``darcy_solve``) versus autograd through an unrolled torch CG solve.

One run, side by side, each method in its own subprocess so that its peak resident memory (ru_maxrss,
minus the same process's RSS after imports and setup) is its own. Also reported: bytes of tensors saved
for backward (``torch.autograd.graph.saved_tensors_hooks``), wall time of forward + backward, and the
gradient's relative difference to the adjoint-state direct-solve gradient.

    python benchmarks/pde_darcy_adjoint.py [--size 64] [--batch 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

METHODS = ("adjoint_direct", "adjoint_cg", "unrolled_cg")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(method: str, size: int, batch: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    from invsolve.data.grf import grf_neumann
    from invsolve.operators.pde.darcy import darcy_solve, solve_cg

    a0 = torch.where(grf_neumann(batch, size, seed=0) >= 0, 12.0, 3.0).double()
    w = torch.randn(a0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b = torch.ones_like(a0) / size**2
    # reference gradient (cheap, and the same in every subprocess)
    ar = a0.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad((darcy_solve(ar, solver="direct") * w).sum(), ar)
    rss0 = _rss_mb()
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    a = a0.clone().requires_grad_(True)
    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if method == "adjoint_direct":
            u = darcy_solve(a, solver="direct")
        elif method == "adjoint_cg":
            u = darcy_solve(a, solver="cg", rtol=1e-10)
        else:
            u = solve_cg(a, b, rtol=1e-10)
        loss = (u * w).sum()
    (g,) = torch.autograd.grad(loss, a)
    seconds = time.perf_counter() - t0
    return {"method": method, "seconds": seconds, "saved_mb": saved[0] / 2**20,
            "peak_rss_mb": _rss_mb() - rss0, "grad_rel_diff": float((g - g_ref).norm() / g_ref.norm())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.method:
        print(json.dumps(run_one(args.method, args.size, args.batch, args.threads)))
        return
    rows = []
    for m in METHODS:
        out = subprocess.run([sys.executable, __file__, "--method", m, "--size", str(args.size),
                              "--batch", str(args.batch), "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"Darcy gradient, N={args.size}, batch={args.batch}, float64, {args.threads} thread(s)")
    print(f"{'method':<16}{'time s':>10}{'saved MB':>11}{'peak RSS MB':>13}{'grad rel diff':>15}")
    for r in rows:
        print(f"{r['method']:<16}{r['seconds']:>10.3f}{r['saved_mb']:>11.2f}{r['peak_rss_mb']:>13.1f}"
              f"{r['grad_rel_diff']:>15.2e}")
    by = {r["method"]: r for r in rows}
    un = by["unrolled_cg"]
    for m in ("adjoint_direct", "adjoint_cg"):
        r = by[m]
        rss = (f"x{un['peak_rss_mb'] / r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] >= 1.0 else
               f"{un['peak_rss_mb']:.0f} MB vs {r['peak_rss_mb']:.1f} MB (below RSS resolution)")
        print(f"unrolled_cg / {m}: time x{un['seconds'] / r['seconds']:.1f}, saved-for-backward memory "
              f"x{un['saved_mb'] / max(r['saved_mb'], 1e-9):.0f}, peak RSS increase {rss}")

if __name__ == "__main__":
    main()
