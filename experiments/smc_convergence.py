"""Convergence of the SMC solvers (mcgdiff, tds) to the exact posterior on the mixture benchmark.

    python experiments/smc_convergence.py                      # d in {8, 80}, d_y in {1, 4}, 5 problems
    python experiments/smc_convergence.py --table-only         # rebuild the table and figure

Sliced W2 (100 directions) between ``samples`` solver samples and exact posterior samples, over the
floor (two exact sample sets of the same size), as the number of particles K grows (16 ... 4096, at
``--fixed-steps`` steps) and as the number of steps grows (20 ... 1000, at ``--fixed-particles``
particles). Two estimators:
- "single": the samples are resampled from the final weighted population of one run of K particles;
  the SW of ``--runs`` independent runs is averaged (the step sweep uses one run). This is how close
  one run's particle approximation is, bias and variance together.
- "pooled": the samples are drawn from the populations of ceil(samples / K) runs (each an equal
  share), as in experiments/gmm_posterior.py; for K < samples it averages many small runs
  (``--estimator pooled``).
The ESS of every step is recorded (the smallest per-step ESS fraction, mean over runs). Writes
experiments/results/gmm_posterior_smc/{convergence.jsonl, convergence.md, convergence.png}; rows
already present are reused.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

import invsolve
from invsolve.evaluation.gmm import make_case
from invsolve.evaluation.metrics import sliced_wasserstein
from invsolve.solvers.smc import pooled_samples

OUT = Path(__file__).resolve().parent / "results" / "gmm_posterior_smc"


def estimator(r: dict) -> str:
    """Rows written before the estimator field: one run is "single", several runs "pooled"."""
    return r.get("estimator") or ("single" if r.get("runs", 1) == 1 else "pooled")


def _key(r: dict) -> tuple:
    return (r["dim"], r["dim_y"], r["problem"], r["method"], r["particles"], r["steps"], r["samples"],
            estimator(r) if r["method"] != "floor" else "", r.get("runs", 1) if r["method"] != "floor" else 0)


def run(case, solver: str, k: int, steps: int, n: int, seed: int, kind: str, runs: int) -> dict:
    """SW of one solver configuration: "single" = mean over ``runs`` runs of one run's population;
    "pooled" = one sample set from the populations of ceil(n / k) runs."""
    runs = math.ceil(n / k) if kind == "pooled" else runs
    start = time.perf_counter()
    res = invsolve.solve(case.problem.repeat(runs), case.prior, solver, steps=steps, particles=k,
                         seed=seed + 7)
    ref = case.posterior.sample(n, seed=seed + 1)
    parts, logw = res.info["particles"], res.info["log_weights"]
    if kind == "pooled":
        sws = [sliced_wasserstein(pooled_samples(parts, logw, n, seed=seed), ref, seed=seed)]
    else:
        sws = [sliced_wasserstein(pooled_samples(parts[r:r + 1], logw[r:r + 1], n, seed=seed + r), ref,
                                  seed=seed) for r in range(runs)]
    return {"sw": sum(sws) / len(sws), "sw_runs": sws, "runs": runs, "estimator": kind,
            "ess_min": float((res.info["ess"] / k).mean(1).min()), "seconds": time.perf_counter() - start}


def summary(rows: list[dict], kind: str, runs: int) -> dict:
    """(dim, method, sweep, x) -> (mean sw / mean floor, n problems) for one estimator; the particle
    sweep of "single" takes rows of ``runs`` runs, the step sweep rows of one run."""
    floors = {(r["dim"], r["dim_y"], r["problem"]): r["sw"] for r in rows if r["method"] == "floor"}
    acc = defaultdict(lambda: [0.0, 0.0, 0])
    for r in rows:
        if r["method"] == "floor" or (r["dim"], r["dim_y"], r["problem"]) not in floors:
            continue
        pooled_like = estimator(r) == "pooled" or r["runs"] == math.ceil(r["samples"] / r["particles"])
        if (kind == "pooled" and not pooled_like) or (kind == "single" and estimator(r) != "single"):
            continue
        for sweep in r.get("sweeps", []):
            if kind == "single" and r["runs"] != (runs if sweep == "particles" else 1):
                continue
            x = r["particles"] if sweep == "particles" else r["steps"]
            a = acc[(r["dim"], r["method"], sweep, x)]
            a[0] += r["sw"]
            a[1] += floors[(r["dim"], r["dim_y"], r["problem"])]
            a[2] += 1
    return {k: (v[0] / v[1], v[2]) for k, v in acc.items()}


def figure(summs: dict[str, dict], dims: list[int], methods: list[str], path: Path,
           fixed: tuple[int, int]) -> None:
    """Rows: d; columns: particle sweep, step sweep; solid = single-run estimator, dotted = pooled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(dims), 2, figsize=(10, 3.6 * len(dims)), sharey=True, squeeze=False)
    colors = dict(zip(methods, ["tab:blue", "tab:red", "tab:green"]))
    for row, dim in zip(axes, dims):
        for ax, sweep in zip(row, ["particles", "steps"]):
            for kind, style in (("single", "-o"), ("pooled", ":s")):
                for m in methods:
                    pts = sorted((k[3], v[0]) for k, v in summs[kind].items() if k[:3] == (dim, m, sweep))
                    if pts and not (kind == "pooled" and sweep == "steps"):  # one run: same as single
                        ax.plot(*zip(*pts), style, color=colors[m], label=f"{m} ({kind})")
            ax.axhline(1.5, color="grey", lw=0.8, ls="--")
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(sweep)
            other = f"{fixed[0]} steps" if sweep == "particles" else f"{fixed[1]} particles, one run"
            ax.set_title(f"d = {dim}: {sweep} sweep ({other})", fontsize=10)
        row[0].set_ylabel("sliced W2 / floor")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--solvers", nargs="+", default=["mcgdiff", "tds"])
    ap.add_argument("--dims", nargs="+", type=int, default=[8, 80])
    ap.add_argument("--dys", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--problems", type=int, default=5)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--particles", nargs="+", type=int, default=[16, 64, 256, 1024, 4096])
    ap.add_argument("--steps", nargs="+", type=int, default=[20, 50, 100, 200, 500, 1000])
    ap.add_argument("--fixed-steps", type=int, default=100, help="steps of the particle sweep")
    ap.add_argument("--fixed-particles", type=int, default=1024, help="particles of the step sweep")
    ap.add_argument("--runs", type=int, default=4, help="runs averaged per particle-sweep cell (single)")
    ap.add_argument("--estimator", choices=["single", "pooled"], default="single")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "convergence.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    done = {_key(r) for r in rows}
    # (particles, steps, runs) -> sweeps it serves
    configs: dict[tuple[int, int, int], list[str]] = defaultdict(list)
    single = args.estimator == "single"
    for k in args.particles:
        configs[(k, args.fixed_steps, args.runs if single else 0)].append("particles")
    for s in args.steps:
        configs[(args.fixed_particles, s, 1 if single else 0)].append("steps")
    jobs = [(d, dy, p) for d in args.dims for dy in args.dys for p in range(args.problems)]
    with path.open("a") as fh:
        for d, dy, p in tqdm(jobs, desc="convergence problems", disable=args.table_only):
            if args.table_only:
                break
            base = {"dim": d, "dim_y": dy, "problem": p, "samples": args.samples}
            case = None
            todo = [("floor", 0, 0, 0, [])] + [(m, k, s, r, sw) for m in args.solvers
                                              for (k, s, r), sw in configs.items()]
            for m, k, s, r, sweeps in todo:
                runs = r if single else math.ceil(args.samples / max(k, 1))
                row = {**base, "method": m, "particles": k, "steps": s, "sweeps": sweeps,
                       "estimator": args.estimator, "runs": runs}
                if m == "floor":
                    row = {**base, "method": m, "particles": 0, "steps": 0}
                if _key(row) in done:
                    continue
                case = case or make_case(d, dy, p)
                if m == "floor":
                    ref = case.posterior.sample(args.samples, seed=p + 1)
                    res = {"sw": sliced_wasserstein(case.posterior.sample(args.samples, seed=p + 2), ref,
                                                    seed=p)}
                else:
                    res = run(case, m, k, s, args.samples, p, args.estimator, r)
                row |= res
                rows.append(row)
                fh.write(json.dumps(row) + "\n")
                fh.flush()
    keep = [r for r in rows if r["dim"] in args.dims and r["dim_y"] in args.dys
            and r["problem"] < args.problems and r["samples"] == args.samples]
    summs = {kind: summary(keep, kind, args.runs) for kind in ("single", "pooled")}
    lines = [(f"SMC convergence on the mixture benchmark: mean sliced W2 over mean floor ({args.samples} "
              f"samples, d_y in {args.dys}, {args.problems} problems each). single: samples from one run's "
              f"final population, SW averaged over {args.runs} runs (particle sweep) or one run (step "
              "sweep); pooled: samples from the populations of ceil(samples / K) runs. Particle sweep at "
              f"{args.fixed_steps} steps, step sweep at {args.fixed_particles} particles. Command: python "
              f"experiments/smc_convergence.py {' '.join(argv if argv is not None else sys.argv[1:])}"), ""]
    for kind in ("single", "pooled"):
        for sweep, values in (("particles", args.particles), ("steps", args.steps)):
            if kind == "pooled" and sweep == "steps":
                continue
            if not any(key[2] == sweep for key in summs[kind]):  # nothing run with this estimator
                continue
            lines += [f"{kind}, {sweep} sweep:", "",
                      "| d | method | " + " | ".join(f"{sweep} {v}" for v in values) + " |",
                      "|" + "---|" * (len(values) + 2)]
            for d in args.dims:
                for m in args.solvers:
                    cells = [summs[kind].get((d, m, sweep, v)) for v in values]
                    lines.append(f"| {d} | {m} | " + " | ".join(f"{c[0]:.2f} (n={c[1]})" if c else ""
                                                                for c in cells) + " |")
            lines.append("")
    (OUT / "convergence.md").write_text("\n".join(lines))
    print("\n".join(lines))
    figure(summs, args.dims, args.solvers, OUT / "convergence.png", (args.fixed_steps, args.fixed_particles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
