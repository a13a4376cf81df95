"""Peak memory of the gradient-guided solvers against image size and batch, and against steps.

    OMP_NUM_THREADS=1 python benchmarks/memory.py                    # dps mcg pigdm ot_ode dflow
    OMP_NUM_THREADS=1 python benchmarks/memory.py --sizes 64 128 --batches 1 4 --solvers dps

Each cell runs in a fresh subprocess, so peaks do not mix: the prior (the shipped natural-rgb UNet,
3 channels; it is fully convolutional, so any size works) and the problem (random inpainting, 50 %
missing, sigma_y 0.05) are built, then one solve runs. On CPU the peak is the process's peak
resident set size (``resource.getrusage``, ru_maxrss) minus the resident size just before the
solve; on CUDA ``torch.cuda.max_memory_allocated`` after a reset. Steps are few (``--steps``,
default 3) because memory does not grow with the number of steps when no graph is kept across
steps; the last column checks that with a second run at ``--steps-long`` steps (tests/test_memory.py
asserts it without timing anything). Writes benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

SOLVERS = ["dps", "mcg", "pigdm", "ot_ode", "dflow"]
FAST = {"dflow": {"ode_steps": 2}}


def cell(solver: str, size: int, batch: int, steps: int, device: str) -> dict:
    """Peak memory (MiB) of one solve, measured in this process (called in a subprocess)."""
    import resource
    import warnings

    import torch

    import invsolve
    from invsolve import operators, priors

    warnings.filterwarnings("ignore")
    prior = priors.load("natural-rgb").to(device)
    op = operators.build("inpaint_random", img_size=(3, size, size), missing=0.5, noise_sigma=0.05).to(device)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    problem = invsolve.Problem.simulate(op, x, seed=0)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    res = invsolve.solve(problem, prior, solver, steps=steps, seed=0, **FAST.get(solver, {}))
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"solver": solver, "size": size, "batch": batch, "steps": steps, "device": device,
            "peak_mib": (peak - base) / 2**20, "seconds": res.seconds, "nfe": res.nfe}


def run_in_subprocess(*args) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
            f"import memory; print(json.dumps(memory.cell(*{args!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--solvers", nargs="+", default=SOLVERS)
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--steps-long", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="memory")
    args = ap.parse_args(argv)
    info = C.machine()
    print(C.describe(info), "\n", flush=True)
    rows, cells = [], []
    for solver in args.solvers:
        for size in args.sizes:
            for batch in args.batches:
                short = run_in_subprocess(solver, size, batch, args.steps, args.device)
                long = (run_in_subprocess(solver, size, batch, args.steps_long, args.device)
                        if size == args.sizes[0] and batch == args.batches[0] else None)
                cells.append({"short": short, "long": long})
                if "error" in short:
                    print(f"  {solver} {size} x{batch}: {short['error']}", flush=True)
                    continue
                grow = "" if long is None or "error" in long else long["peak_mib"] / short["peak_mib"]
                rows.append([solver, size, batch, short["peak_mib"], short["peak_mib"] / batch, grow])
                print(f"  {solver:7s} {size:4d} x{batch}: {short['peak_mib']:.0f} MiB", flush=True)
    print(f"\nPeak memory above the loaded prior and problem ({args.device}), {args.steps} steps; last "
          f"column: peak at {args.steps_long} steps over peak at {args.steps} (1 = no growth)\n")
    print(C.table(["solver", "size", "batch", "peak (MiB)", "per sample (MiB)",
                   f"{args.steps_long} / {args.steps} steps"], rows))
    out = C.write(args.out, info, {"settings": vars(args), "cells": cells})
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
