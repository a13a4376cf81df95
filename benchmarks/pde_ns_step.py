"""Navier-Stokes: wall time per forward step (Crank-Nicolson/Heun, 2/3 de-aliasing) at 64^2 and 128^2.

Median over repeats of a block of steps, batch 1 and 8, float32 and float64, on the CPU (or CUDA with
--device cuda). On a shared machine use --threads 1: spinning OpenMP threads on oversubscribed cores
can be 100x slower than one thread for these small FFTs.

    python benchmarks/pde_ns_step.py [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from invsolve.operators.pde.navier_stokes import NSSolver


def time_per_step(size: int, batch: int, dtype: torch.dtype, device: str, steps: int = 20,
                  repeats: int = 5) -> float:
    """Median seconds per step of ``NSSolver.step_hat`` on a random smooth state."""
    s = NSSolver(size, dt=1e-3)
    w = torch.randn(batch, size, size, dtype=dtype, device=device)
    w_hat = torch.fft.rfft2(w) * torch.exp(-torch.arange(size // 2 + 1, device=device) / 4.0)
    for _ in range(3):
        s.step_hat(w_hat)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x = w_hat
        for _ in range(steps):
            x = s.step_hat(x)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"NS time per step, device={args.device}, threads={torch.get_num_threads()}")
    print(f"{'grid':>6}{'batch':>7}{'dtype':>9}{'ms/step':>10}{'s per time unit (200 steps)':>29}")
    for size in (64, 128):
        for batch in (1, 8):
            for dtype in (torch.float32, torch.float64):
                ms = 1e3 * time_per_step(size, batch, dtype, args.device)
                print(f"{size:>6}{batch:>7}{str(dtype)[6:]:>9}{ms:>10.2f}{ms * 200 / 1e3:>29.2f}")


if __name__ == "__main__":
    main()
