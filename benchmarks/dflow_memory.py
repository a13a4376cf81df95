"""D-Flow memory and time per optimisation step against the number of ODE steps (one run, side by side).

    python benchmarks/dflow_memory.py            # 64x64 RGB, small UNet, 4 / 8 / 16 / 32 midpoint steps

One D-Flow step = one loss-and-gradient evaluation through the ODE (Ben-Hamu et al. 2024). With
gradient checkpointing (invsolve.solvers.dflow) the peak memory should stay flat in the number of ODE
steps and the time grow linearly. Each configuration runs in a fresh process; its peak memory is the
growth of the peak resident set (ru_maxrss) during the first step, its time that of a second step. A run without checkpointing (plain autograd through all steps) is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

import invsolve
from invsolve import operators, paths, priors
from invsolve.solvers.dflow import DFlow


def _child(n: int, ckpt: bool, size: int, threads: int) -> dict:
    """In a fresh process: peak resident memory added by one step (ru_maxrss after minus before),
    then the time of a second step."""
    torch.set_num_threads(threads)
    prior, problem, z = _setup(size)
    solver = DFlow(ode_steps=n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    one_step(solver, prior, problem, z, ckpt)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    start = time.perf_counter()
    one_step(solver, prior, problem, z, ckpt)
    return {"peak_mib": peak / 1024, "seconds": time.perf_counter() - start}


def _setup(size: int):
    torch.manual_seed(0)
    net = priors.UNet(in_channels=3, channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, groups=8)
    prior = priors.NetworkPrior(net, "velocity", path=paths.LinearFlow(noise_at_zero=True), data_range=(-1, 1))
    problem = invsolve.Problem.simulate(operators.build("inpaint_box", img_size=(3, size, size), noise_sigma=0.05),
                                        torch.rand(1, 3, size, size), seed=0)
    return prior, problem, torch.randn(1, 3, size, size)


def one_step(solver: DFlow, prior, problem, z: torch.Tensor, checkpointed: bool) -> None:
    """Loss and gradient of D-Flow's objective at z (what one optimiser evaluation does)."""
    solver = DFlow(ode_steps=solver.ode_steps, checkpoint=checkpointed)
    z = z.detach().requires_grad_(True)
    loss, _ = solver.objective(problem, prior, z)
    loss.sum().backward()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ode-steps", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", nargs=2, type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child[0], bool(args.child[1]), args.size, args.threads)))
        return 0
    n_params = sum(p.numel() for p in _setup(8)[0].parameters())
    s = args.size
    print(f"D-Flow, one loss-and-gradient evaluation, {s}x{s}x3, batch 1, UNet {n_params / 1e6:.2f} M params, "
          f"midpoint (2 network calls per step), {args.threads} thread(s)\n")
    print("| ODE steps | checkpointed peak (MiB) | checkpointed time (s) | plain autograd peak (MiB) | "
          "plain time (s) |")
    print("|---|---|---|---|---|")
    for n in args.ode_steps:
        row = []
        for ckpt in (1, 0):
            cmd = [sys.executable, __file__, "--size", str(s), "--threads", str(args.threads), "--child", str(n),
                   str(ckpt)]
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            row += [f"{out['peak_mib']:.1f}", f"{out['seconds']:.2f}"]
        print(f"| {n} | " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
