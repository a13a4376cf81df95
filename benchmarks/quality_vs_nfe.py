"""Quality against network evaluations (NFE) for every solver: PSNR on images, sliced Wasserstein on
the Gaussian mixture; one Pareto figure per task.

    OMP_NUM_THREADS=1 python benchmarks/quality_vs_nfe.py            # the reduced grid (see below)
    OMP_NUM_THREADS=1 python benchmarks/quality_vs_nfe.py --full     # every solver at every NFE
    OMP_NUM_THREADS=1 python benchmarks/quality_vs_nfe.py --report   # tables and figures from the rows

Tasks: ``sr4``, ``inpaint_box`` and ``blur_gauss`` (9 x 9, std 2) on 4 crops 32 x 32 of the held-out
photo with the natural-rgb prior, sigma_y = 0.02 (one batch, one seed per crop: results do not
depend on the batching); ``gmm``: the MCGdiff mixture (``evaluation.gmm.make_case``, d = 8,
d_y = 2, problems 0-2), 500 samples per problem, sliced Wasserstein to exact posterior samples.
NFE targets 10, 20, 50, 100, 200, 500, 1000; each solver's steps are set so that its NFE is the
target or the nearest it can reach (DAPS: 5 ODE steps per level; D-Flow: 3 midpoint steps per flow
and (2 steps + 1) flows; OT-ODE with Heun: 2 steps - 1), and the row records the NFE it made.
``ddim`` samples the prior and ignores y, so it is left out; its second-order steps are checked on
the mixture's exact ODE in tests/test_ode.py. OT-ODE enters three times: Euler (Alg. 1) and the
two second-order steps of ``invsolve.solvers.ode`` (``method="heun"``, ``"dpm2m"``); so does DAPS, whose
inner x0_hat ODE takes the same steps (``ode_method``; 5 steps per level, Heun's with twice the calls). PnP-Flow enters
twice: one interpolation draw per step (its default) and ``pnp_flow+avg5``, the denoiser averaged over 5
draws per step as the PnP-Flow paper's experiments run it (``samples=5``, steps = NFE / 5).

Reduced grid (the default; the full image grid is ~4-6 hours on one core of this machine): on
images every solver runs at NFE 10-200, and at 500 and 1000 only the three best per task at 200
plus DPS and DAPS (whose papers run 1000 NFE); MCGdiff and TDS (8 particles, so each call costs 8
network evaluations of the batch) stop at 200. The mixture runs the full grid.

Resumable: one JSON row per (task, solver, NFE target) in benchmarks/results/quality_vs_nfe.jsonl,
appended as soon as it exists; a rerun skips rows already there. Writes quality_vs_nfe.json (the
summary) and quality_vs_nfe_<task>.png.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

import invsolve
from invsolve import operators, priors, solvers
from invsolve.evaluation.gmm import make_case
from invsolve.evaluation.metrics import sliced_wasserstein
from invsolve.evaluation.rows import RowWriter, canonical, read_rows
from invsolve.priors.datasets import natural_rgb_images

GRID = (10, 20, 50, 100, 200, 500, 1000)
IMAGE_TASKS = {"sr4": {}, "inpaint_box": {}, "blur_gauss": {"kernel_size": 9, "std": 2.0}}
NOISE = 0.02
GMM = {"dim": 8, "dim_y": 2, "problems": (0, 1, 2), "samples": 500}
SMC = ("mcgdiff", "tds")
ALWAYS_1000 = ("dps", "daps", "daps+heun", "daps+dpm2m")
ROWS = C.RESULTS / "quality_vs_nfe.jsonl"


def labels() -> list[str]:
    names = [s for s in solvers.available(baselines=False) if s != "ddim"]
    return names + ["ot_ode+heun", "ot_ode+dpm2m", "daps+heun", "daps+dpm2m", "pnp_flow+avg5"]


def settings(label: str, nfe: int, image: bool) -> dict[str, Any]:
    """Hyperparameters that make ``label`` spend about ``nfe`` network evaluations."""
    name, _, method = label.partition("+")
    if name == "daps":  # 5 ODE steps per level: 5 calls (Euler, DPM-Solver++(2M)) or 10 (Heun)
        hp = {"steps": max(1, round(nfe / (10 if method == "heun" else 5))), "ode_steps": 5}
        return {**hp, "ode_method": method} if method else hp
    if name == "dflow":  # (2 steps + 1) flows of 3 midpoint steps (6 calls)
        return {"steps": max(1, round((nfe / 6 - 1) / 2)), "ode_steps": 3}
    if name in SMC:
        return {"steps": nfe, "particles": 8 if image else 64}
    if method == "avg5":  # the PnP-Flow paper's 5 interpolation draws averaged per step
        return {"steps": max(1, round(nfe / 5)), "samples": 5}
    if method == "heun":
        return {"steps": (nfe + 1) // 2, "method": "heun"}
    if method:
        return {"steps": nfe, "method": method}
    return {"steps": nfe}


# --- tasks --------------------------------------------------------------------------------------------

def image_problem(task: str) -> tuple[invsolve.Problem, torch.Tensor]:
    photo = natural_rgb_images("test")[0][0]
    corners = [(40, 60), (150, 200), (100, 330), (200, 120)]
    x = torch.stack([photo[:, y:y + 32, c:c + 32] for y, c in corners])
    op = operators.build(task, img_size=(3, 32, 32), noise_sigma=NOISE, **IMAGE_TASKS[task])
    return invsolve.Problem.simulate(op, x, seed=0), x


def run_image(task: str, label: str, nfe: int, prior, cache: dict) -> dict:
    problem, x = cache.setdefault(task, image_problem(task))
    hp = settings(label, nfe, image=True)
    start = time.perf_counter()
    res = invsolve.solve(problem, prior, label.partition("+")[0], seed=list(range(len(x))), **hp)
    psnr = C.psnr(res.x, x).tolist()
    return {"nfe": res.nfe, "seconds": time.perf_counter() - start, "psnr": statistics.mean(psnr),
            "psnr_items": psnr}


def run_gmm(label: str, nfe: int, cache: dict) -> dict:
    hp = settings(label, nfe, image=False)
    sws, nfes, start = [], [], time.perf_counter()
    for p in GMM["problems"]:
        case = cache.setdefault(("gmm", p), make_case(GMM["dim"], GMM["dim_y"], p))
        n = GMM["samples"]
        ref = case.posterior.sample(n, seed=1)
        res = invsolve.solve(case.problem.repeat(n), case.prior, label.partition("+")[0], seed=7, **hp)
        sws.append(sliced_wasserstein(res.x, ref, 100, seed=0))
        nfes.append(res.nfe)
    return {"nfe": nfes[0], "seconds": time.perf_counter() - start, "sw": statistics.mean(sws),
            "sw_items": sws}


def gmm_references(cache: dict) -> dict:
    floor, prior = [], []
    for p in GMM["problems"]:
        case = cache.setdefault(("gmm", p), make_case(GMM["dim"], GMM["dim_y"], p))
        n = GMM["samples"]
        ref = case.posterior.sample(n, seed=1)
        floor.append(sliced_wasserstein(case.posterior.sample(n, seed=2), ref, 100, seed=0))
        prior.append(sliced_wasserstein(case.prior.sample(n, seed=3), ref, 100, seed=0))
    return {"floor": statistics.mean(floor), "prior": statistics.mean(prior)}


# --- the grid -----------------------------------------------------------------------------------------

def key(task: str, label: str, nfe: int) -> dict:
    image = task != "gmm"
    return {"task": task, "solver": label, "nfe_target": nfe, "hp": settings(label, nfe, image),
            "data": ("chelsea 4 crops 32x32, sigma_y 0.02, seeds 0-3" if image else
                     f"gmm d={GMM['dim']} dy={GMM['dim_y']} problems {list(GMM['problems'])} "
                     f"n={GMM['samples']}")}


def plan(task: str, done: dict, full: bool) -> list[tuple[str, int]]:
    """(solver, NFE) pairs to run for ``task``, in order of NFE."""
    out = []
    for nfe in GRID:
        for label in labels():
            if task == "gmm" or full:
                out.append((label, nfe))
                continue
            if label in SMC and nfe > 200:
                continue
            if nfe <= 200 or label in ALWAYS_1000 or label in top_at(task, done, 200, 3):
                out.append((label, nfe))
    return out


def top_at(task: str, done: dict, nfe: int, k: int) -> list[str]:
    rows = [r for r in done.values() if r["key"]["task"] == task and r["key"]["nfe_target"] == nfe
            and "psnr" in r]
    return [r["key"]["solver"] for r in sorted(rows, key=lambda r: -r["psnr"])[:k]]


def run(tasks: list[str], full: bool, budget_s: float | None) -> None:
    done = {canonical(r["key"]): r for r in read_rows(ROWS)}
    prior = priors.load("natural-rgb")
    cache: dict = {}
    start = time.perf_counter()
    with RowWriter(ROWS) as writer:
        for nfe_stage in GRID:  # all tasks at an NFE before the next NFE, so a cut run is balanced
            for task in tasks:
                for label, nfe in plan(task, done, full):
                    if nfe != nfe_stage:
                        continue
                    k = key(task, label, nfe)
                    if canonical(k) in done:
                        continue
                    if budget_s is not None and time.perf_counter() - start > budget_s:
                        print(f"time budget of {budget_s:.0f} s reached; rerun to continue", flush=True)
                        return
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        try:
                            out = run_gmm(label, nfe, cache) if task == "gmm" else \
                                run_image(task, label, nfe, prior, cache)
                        except (ValueError, FloatingPointError) as err:
                            out = {"error": str(err).split(";")[0]}
                    row = {"key": k, **out}
                    writer.write(row)
                    done[canonical(k)] = row
                    what = (f"PSNR {out['psnr']:.2f}" if "psnr" in out else
                            f"SW {out['sw']:.3f}" if "sw" in out else f"n/a: {out['error'][:70]}")
                    print(f"  {task:11s} {label:13s} NFE {out.get('nfe', nfe):5} {what}  "
                          f"{out.get('seconds', 0):7.1f} s", flush=True)


# --- report -------------------------------------------------------------------------------------------

def report(tasks: list[str], info: dict) -> dict:
    rows = [r for r in read_rows(ROWS) if "error" not in r]
    cache: dict = {}
    refs = gmm_references(cache) if "gmm" in tasks else {}
    summary: dict[str, Any] = {}
    for task in tasks:
        sel = [r for r in rows if r["key"]["task"] == task]
        if not sel:
            continue
        metric, better = ("sw", min) if task == "gmm" else ("psnr", max)
        by_target: dict[int, list[dict]] = {}
        for r in sel:
            by_target.setdefault(r["key"]["nfe_target"], []).append(r)
        table_rows = []
        for nfe in sorted(by_target):
            best = better(by_target[nfe], key=lambda r: r[metric])
            table_rows.append([nfe, len(by_target[nfe]), best["key"]["solver"], best["nfe"], best[metric]])
        best = {n: better(rs, key=lambda r: r[metric]) for n, rs in by_target.items()}
        gap = None
        if 100 in best and 1000 in best:
            gap = (best[1000][metric] - best[100][metric]) if metric == "psnr" else \
                (best[100][metric] - best[1000][metric])
        summary[task] = {"best": {n: {"solver": b["key"]["solver"], "nfe": b["nfe"], metric: b[metric]}
                                  for n, b in sorted(best.items())}, "gap_100_vs_1000": gap}
        print(f"\n{task}: best {metric.upper()} per NFE target ({'lower' if metric == 'sw' else 'higher'}"
              " is better)\n")
        print(C.table(["NFE target", "solvers run", "best solver", "its NFE", metric.upper()], table_rows))
        if gap is not None:
            unit = "dB" if metric == "psnr" else "(SW)"
            print(f"best at 100 NFE is {gap:.3g} {unit} behind the best at 1000 NFE "
                  f"({best[100]['key']['solver']} vs {best[1000]['key']['solver']})"
                  + (" - within 0.5 dB" if metric == "psnr" and gap <= 0.5 else ""))
        grid = sorted({r["key"]["solver"] for r in sel})
        full_rows = []
        for label in grid:
            vals = {r["key"]["nfe_target"]: r[metric] for r in sel if r["key"]["solver"] == label}
            full_rows.append([label] + [vals.get(n, "") for n in GRID])
        print()
        print(C.table(["solver"] + [str(n) for n in GRID], full_rows))
        figure(task, sel, metric, refs if task == "gmm" else None)
    C.write("quality_vs_nfe", info, {"grid": GRID, "tasks": tasks, "gmm": GMM, "gmm_references": refs,
                                     "summary": summary})
    return summary


def figure(task: str, rows: list[dict], metric: str, refs: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    labels_ = sorted({r["key"]["solver"] for r in rows})
    cmap = plt.get_cmap("tab20")
    for i, label in enumerate(labels_):
        pts = sorted((r["nfe"], r[metric]) for r in rows if r["key"]["solver"] == label)
        ax.plot(*zip(*pts, strict=True), marker="o", ms=3, lw=1, color=cmap(i % 20), label=label)
    pts = sorted((r["nfe"], r[metric]) for r in rows if math.isfinite(r[metric]))
    front, best = [], None
    for n, v in pts:  # Pareto front: the best value reachable with at most n NFE
        if best is None or (v > best if metric == "psnr" else v < best):
            best = v
            front.append((n, v))
    ax.step(*zip(*front, strict=True), where="post", color="k", lw=2, alpha=0.5, label="Pareto front")
    if refs:
        ax.axhline(refs["floor"], ls="--", color="gray", lw=1, label="floor (exact vs exact)")
        ax.axhline(refs["prior"], ls=":", color="gray", lw=1, label="prior (ignores y)")
        ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "sliced Wasserstein to the exact posterior")
    ax.set_title(f"{task}: quality against NFE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(C.RESULTS / f"quality_vs_nfe_{task}.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["gmm", *IMAGE_TASKS])
    ap.add_argument("--full", action="store_true", help="every solver at every NFE on images too")
    ap.add_argument("--report", action="store_true", help="only rebuild tables and figures from the rows")
    ap.add_argument("--budget", type=float, default=None, help="stop starting new rows after this many s")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    info = C.machine(args.threads)
    print(C.describe(info), "\n", flush=True)
    if not args.report:
        run(args.tasks, args.full, args.budget)
    report(args.tasks, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
