"""invsolve against deepinv's own samplers (deepinv.sampling DDRM, DiffPIR, DPS) on one denoiser.

    OMP_NUM_THREADS=1 python benchmarks/vs_deepinv.py                  # 4 crops, 32 x 32
    OMP_NUM_THREADS=1 python benchmarks/vs_deepinv.py --crops 2 --dps-steps 50

The shipped ``natural-rgb`` prior is a deepinv ``Denoiser`` (``prior(x, sigma)``, images in [0, 1]),
so both libraries call the same network on the same measurement (same operator object, same y) with
the same number of steps. Settings matched where the two parameterise the same thing:
DDRM eta = 0.85, eta_b = 1; DiffPIR lambda = 7, zeta = 0.3 (deepinv's default 0.1 -> invsolve's);
DPS: deepinv's weight is on the residual norm in [0, 1] units, invsolve's zeta in [-1, 1] units, so
weight = zeta / 2 = 0.5 is the same step (deepinv's default 1.0 is twice it). What stays different
is each library's own design: the time grid (invsolve: the DDPM grid of each paper's code;
deepinv DDRM: sigma linear from 1 to 0 in [0, 1] units; deepinv DPS: continuous VP time linear in
[1, 0]), the DiffPIR start (invsolve: the noisy measurement, bicubic for SR; deepinv: A^T y) and
DPS's clip (invsolve: [0, 1] as the official clip_denoised; deepinv: [-1, 1]).

Tasks: random inpainting (70% missing), bicubic x4 super-resolution (not decomposable: no DDRM in
either library), Gaussian deblurring (9 x 9, std 2, circular); sigma_y = 0.02; crops of the held-out
photo (chelsea). Runs alternate ours / theirs (order flipped per crop) so load hits both alike.
Time ratio = sum of our wall times / sum of theirs; PSNR = mean over crops (x ``--seeds`` draws each:
one draw per crop is noisy, e.g. DiffPIR at 20 steps on random inpainting ranges 19.6-29.7 dB over 3
draws of one crop, so compare PSNR with the standard error printed beside it). Network calls are counted
on both sides (a forward hook on the prior's module): deepinv's DDRM ends at sigma = 0, where the
prior returns x without calling the network, so it makes one call fewer than its steps; the time per
network call is the ratio at equal work.
Writes benchmarks/results/vs_deepinv.json.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
import warnings
from pathlib import Path

import deepinv as dinv
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

import invsolve
from invsolve import operators, priors
from invsolve.priors.datasets import natural_rgb_images

TASKS = {
    "inpaint_random": {"missing": 0.7},
    "sr4": {},
    "blur_gauss": {"kernel_size": 9, "std": 2.0},
}
NOISE = 0.02


def crops(n: int, size: int) -> torch.Tensor:
    photo = natural_rgb_images("test")[0][0]
    _, h, w = photo.shape
    corners = [(40, 60), (150, 200), (100, 330), (200, 120), (60, 250), (220, 380), (20, 150), (170, 30)]
    out = [photo[:, y:y + size, x:x + size] for y, x in corners[:n] if y + size <= h and x + size <= w]
    return torch.stack(out)


def theirs(method: str, prior, steps: int, seed: int):
    if method == "ddrm":
        model = dinv.sampling.DDRM(prior, sigmas=torch.linspace(1, 0, steps), eta=0.85, etab=1.0)
    elif method == "diffpir":
        model = dinv.sampling.DiffPIR(prior, dinv.optim.data_fidelity.L2(), sigma=NOISE, max_iter=steps,
                                      zeta=0.3, lambda_=7.0)
    else:
        model = dinv.sampling.DPS(prior, num_steps=steps, weight=0.5, dtype=torch.float32,
                                  rng=torch.Generator().manual_seed(seed))

    def run(problem):
        torch.manual_seed(seed)
        return model(problem.y, problem.operator, seed=seed)
    return run


def ours(method: str, prior, steps: int, seed: int, preset: str | None = None):
    def run(problem):
        return invsolve.solve(problem, prior, method, steps=steps, seed=seed, preset=preset).x
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=1, help="posterior draws per crop (PSNR means and the "
                    "standard error of our - their PSNR are over crops x seeds)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--ddrm-steps", type=int, default=20)
    ap.add_argument("--diffpir-steps", type=int, default=20)
    ap.add_argument("--dps-steps", type=int, default=100)
    ap.add_argument("--methods", nargs="+", default=["ddrm", "diffpir", "dps"])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="vs_deepinv")
    ap.add_argument("--preset", default=None, help="ours with this preset for each task (e.g. paper; "
                    "steps stay as given): the per-task settings deepinv's samplers do not have")
    args = ap.parse_args(argv)
    info = C.machine(args.threads)
    print(C.describe(info), "\n", flush=True)
    prior = priors.load("natural-rgb")
    calls = {"n": 0}  # network forward passes (the prior skips the network at sigma = 0)
    prior.module.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    xs = crops(args.crops, args.size)
    steps = {"ddrm": args.ddrm_steps, "diffpir": args.diffpir_steps, "dps": args.dps_steps}
    rows, summary = [], []
    for task in args.tasks:
        op = operators.build(task, img_size=tuple(xs.shape[1:]), noise_sigma=NOISE, **TASKS[task])
        for method in args.methods:
            if method == "ddrm" and task == "sr4":
                continue  # bicubic down-sampling has no SVD in either library
            cell = {"ours": [], "theirs": []}
            for i, k in itertools.product(range(len(xs)), range(args.seeds)):
                x = xs[i:i + 1]
                problem = invsolve.Problem.simulate(op, x, seed=i)
                seed = i + len(xs) * k  # k = 0: the crop's index, as with one seed
                runs = {"ours": ours(method, prior, steps[method], seed, args.preset),
                        "theirs": theirs(method, prior, steps[method], seed)}
                order = ("ours", "theirs") if (i + k) % 2 == 0 else ("theirs", "ours")
                for who in order:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        calls["n"] = 0
                        start = time.perf_counter()
                        out = runs[who](problem)
                        wall = time.perf_counter() - start
                    cell[who].append({"seconds": wall, "psnr": float(C.psnr(out, x).mean()),
                                      "network_calls": calls["n"]})
                    rows.append({"task": task, "method": method, "who": who, "crop": i, "seed": seed,
                                 **cell[who][-1]})
            t_o = sum(r["seconds"] for r in cell["ours"])
            t_t = sum(r["seconds"] for r in cell["theirs"])
            p_o = statistics.mean(r["psnr"] for r in cell["ours"])
            p_t = statistics.mean(r["psnr"] for r in cell["theirs"])
            n_o = sum(r["network_calls"] for r in cell["ours"])
            n_t = sum(r["network_calls"] for r in cell["theirs"])
            per_call = (t_o / n_o) / (t_t / n_t)
            runs_n = len(cell["ours"])
            diff = [a["psnr"] - b["psnr"] for a, b in zip(cell["ours"], cell["theirs"], strict=True)]
            se = statistics.stdev(diff) / runs_n**0.5 if runs_n > 1 else float("nan")
            summary.append([task, method, steps[method], t_o / runs_n, t_t / runs_n, t_o / t_t, n_o // runs_n,
                            n_t // runs_n, per_call, p_o, p_t, se])
            print(f"  {task:14s} {method:8s} ours {t_o / runs_n:6.2f} s {p_o:5.2f} dB   "
                  f"deepinv {t_t / runs_n:6.2f} s {p_t:5.2f} dB (difference SE {se:.2f})   time ratio "
                  f"{t_o / t_t:.3f}, per network call {per_call:.3f} ({n_o // runs_n} / {n_t // runs_n} calls)",
                  flush=True)
    print(f"\ninvsolve vs deepinv.sampling, natural-rgb prior, {len(xs)} crops {args.size} x {args.size} "
          f"of chelsea x {args.seeds} seed(s), sigma_y = {NOISE}\n")
    print(C.table(["task", "method", "steps", "ours (s)", "deepinv (s)", "time ours / deepinv",
                   "network calls ours", "network calls deepinv", "time per call ours / deepinv",
                   "PSNR ours (dB)", "PSNR deepinv (dB)", "SE of the PSNR difference (dB)"], summary))
    out = C.write(args.out, info, {"settings": {"crops": len(xs), "seeds": args.seeds, "size": args.size,
                                                "steps": steps,
                                                "noise_sigma": NOISE, "tasks": TASKS, "preset": args.preset},
                                   "summary": [dict(zip(["task", "method", "steps", "ours_s", "deepinv_s",
                                                         "time_ratio", "calls_ours", "calls_deepinv",
                                                         "time_per_call_ratio", "psnr_ours", "psnr_deepinv",
                                                         "psnr_difference_se"], r,
                                                        strict=True)) for r in summary],
                                   "rows": rows})
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
