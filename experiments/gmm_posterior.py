"""Gaussian-mixture posterior benchmark (MCGdiff, Cardoso et al. 2023, Table 1 setup) for any solvers.

    python experiments/gmm_posterior.py --solvers dps ddim --steps 20 100
    python experiments/gmm_posterior.py --quick          # small grid, under a minute
    python experiments/gmm_posterior.py --solvers daps daps_lip=daps \
        --hp '{"daps_lip": {"step": "lipschitz", "lr": 0.5}}'   # one solver, two settings, two columns

SMC solvers (those with a ``particles`` hyperparameter: mcgdiff, tds) are scored as their papers do:
ceil(samples / particles) independent runs, the samples drawn from the runs' final weighted populations
(``--smc-mode draws`` instead takes one draw per run from ``samples`` runs). ``--metric sw1`` scores with
the mean over directions of the 1-D W1 distance (scipy's ``wasserstein_distance``, the metric of the
authors' benchmark code Badr-MOUFAD/dcps gmm.py) instead of the sliced W2.

    python experiments/gmm_posterior.py --solvers mcgdiff tds --dims 8 80 --problems 10 \
        --samples 500 --hp '{"mcgdiff": {"particles": 1000}, "tds": {"particles": 1000}}' \
        --name gmm_posterior_smc

Prints a markdown table of the sliced Wasserstein distance (100 directions) to exact posterior samples,
mean +- standard error over problems, with the floor (exact vs exact) and the prior (exact prior
samples) beside it. Writes experiments/results/<name>/{results.jsonl,table.md}. Rows already in
results.jsonl are reused, so an interrupted run resumes where it stopped.
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
from invsolve.evaluation.gmm import GMMCase, make_case, reference_scores, score_case
from invsolve.evaluation.metrics import sliced_wasserstein
from invsolve.solvers.smc import pooled_samples

RESULTS = Path(__file__).resolve().parent / "results"


def _key(row: dict) -> tuple:
    return (row["dim"], row["dim_y"], row["problem"], row["method"], row["steps"], row.get("sigma_y_fixed"),
            row.get("hp", "{}"), row.get("metric", "sw2"), row.get("smc_mode", ""))


def _hp_key(hp: dict, method: str) -> str:
    return json.dumps(hp.get(method, {}), sort_keys=True)


def _mean_se(vals: list[float]) -> str:
    """mean ± standard error of the finite values; failures (solver NaN guard) are counted."""
    failed = sum(not math.isfinite(v) for v in vals)
    vals = [v for v in vals if math.isfinite(v)]
    note = f" ({failed} failed)" if failed else ""
    if not vals:
        return "failed" if failed else ""
    m = sum(vals) / len(vals)
    se = (sum((v - m) ** 2 for v in vals) / max(len(vals) - 1, 1)) ** 0.5 / len(vals) ** 0.5
    return f"{m:.2f} ± {se:.2f}{note}"


# Issue 12: the MCGdiff authors' benchmark code (Badr-MOUFAD/dcps, src/inverse_problem_with_diffusion_prior/
# gmm.py) run here on CPU: mean over 100 directions of the 1-D W1 distance to 2000 exact posterior samples,
# mean over 10 problems (5 at d = 80 with 100 steps); MCGdiff = all particles of two runs of 1000; DDRM
# etas 0.85 / 1 / 1; DPS zeta 0.1. Their problems are other draws of the same distribution as ours.
AUTHORS_SW1 = {  # (d, d_y, steps): (floor, prior, MCGdiff, DDRM, DPS)
    (8, 1, 20): (0.15, 7.85, 1.05, 4.44, 3.74), (8, 2, 20): (0.13, 9.32, 0.84, 4.47, 5.72),
    (8, 4, 20): (0.03, 9.31, 0.21, 0.55, 1.20), (80, 1, 20): (0.15, 8.37, 1.03, 7.95, 6.78),
    (80, 2, 20): (0.07, 9.13, 0.54, 7.78, 5.17), (80, 4, 20): (0.05, 9.21, 0.32, 7.26, 3.31),
    (8, 1, 100): (0.10, 9.62, 0.55, 4.43, 3.48), (8, 4, 100): (0.04, 9.81, 0.17, 1.38, 1.25),
    (80, 1, 100): (0.14, 7.18, 0.94, 6.83, 3.11), (80, 4, 100): (0.04, 9.13, 0.18, 5.64, 0.65),
}


def authors_table(rows: list[dict], labels: dict[str, str]) -> str:
    """Ours beside the authors' numbers (AUTHORS_SW1), absolute and over each side's floor.

    ``labels`` maps the authors' method names to our columns (e.g. {"MCGdiff": "mcgdiff"})."""
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("metric") == "sw1" and math.isfinite(r["sw"]):
            cells[(r["dim"], r["dim_y"], r["steps"] if r["method"] not in ("floor", "prior") else None)][
                r["method"]].append(r["sw"])
    lines = ["| d | d_y | steps | floor ours / theirs | "
             + " | ".join(f"{m} ours / theirs | {m} / floor ours / theirs" for m in labels) + " |",
             "|" + "---|" * (4 + 2 * len(labels))]
    names = ["floor", "prior", "MCGdiff", "DDRM", "DPS"]
    for (d, dy, steps), ref in sorted(AUTHORS_SW1.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        theirs = dict(zip(names, ref))
        fl = cells[(d, dy, None)].get("floor", [])
        if not fl:
            continue
        ours_floor = sum(fl) / len(fl)
        row = f"| {d} | {dy} | {steps} | {ours_floor:.2f} / {theirs['floor']:.2f} |"
        for name, col in labels.items():
            v = cells[(d, dy, steps)].get(col, [])
            if not v:
                row += " | |"
                continue
            ours = sum(v) / len(v)
            row += (f" {ours:.2f} / {theirs[name]:.2f} | {ours / ours_floor:.1f} / "
                    f"{theirs[name] / theirs['floor']:.1f} |")
        lines.append(row)
    return "\n".join(lines)


def is_smc(solver: str) -> bool:
    """SMC solvers carry K particles per measurement (a ``particles`` hyperparameter)."""
    return "particles" in invsolve.solvers.get(solver).hyperparameters()


def _power(metric: str) -> int:
    return 1 if metric == "sw1" else 2


def metric_references(case: GMMCase, n: int, seed: int, metric: str) -> dict:
    """Floor and prior as ``reference_scores``, with the metric's power (same samples, same seeds)."""
    if metric == "sw2":
        return reference_scores(case, n, seed=seed)
    reference = case.posterior.sample(n, seed=seed + 1)
    p = _power(metric)
    return {"floor": sliced_wasserstein(case.posterior.sample(n, seed=seed + 2), reference, seed=seed, p=p),
            "prior": sliced_wasserstein(case.prior.sample(n, seed=seed + 3), reference, seed=seed, p=p)}


def score(case: GMMCase, solver: str, n: int, steps: int, seed: int, metric: str = "sw2",
          smc_mode: str = "pooled", **hp) -> dict:
    """``score_case`` for any metric; SMC solvers scored from their final weighted populations.

    SMC, ``smc_mode="pooled"``: R = ceil(n / K) runs of K particles, n samples resampled from their
    populations (each run an equal share); "draws": n runs, one draw each (the solver's own output).
    The row also records ``ess_min``, the smallest per-step effective sample size fraction (mean over
    runs) and ``runs``.
    """
    if metric == "sw2" and not is_smc(solver):
        return score_case(case, solver, n, steps, seed=seed, **hp)
    reference = case.posterior.sample(n, seed=seed + 1)
    smc = is_smc(solver)
    k = int(hp.get("particles", invsolve.solvers.get(solver).hyperparameters().get("particles", 1)))
    runs = math.ceil(n / k) if smc and smc_mode == "pooled" else n
    start = time.perf_counter()
    try:
        res = invsolve.solve(case.problem.repeat(runs), case.prior, solver, seed=seed + 7, steps=steps, **hp)
    except FloatingPointError as err:
        return {"sw": float("nan"), "nfe": 0, "seconds": time.perf_counter() - start, "error": str(err)}
    x = res.x
    extra = {}
    if smc:
        if smc_mode == "pooled":
            x = pooled_samples(res.info["particles"], res.info["log_weights"], n, seed=seed)
        extra = {"ess_min": float((res.info["ess"] / k).mean(1).min()), "runs": runs}
    sw = sliced_wasserstein(x, reference, 100, seed=seed, p=_power(metric))
    return {"sw": sw, "nfe": res.nfe, "seconds": time.perf_counter() - start, **extra}


def table(rows: list[dict], methods: list[tuple[str, int]], hp: dict) -> str:
    """Markdown table: one row per (d, d_y), columns n (problems), floor, prior, then solver@steps
    (rows run with the hyperparameters ``hp`` only)."""
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("hp", "{}") != _hp_key(hp, r["method"]):
            continue
        col = r["method"] if r["method"] in ("floor", "prior") else f"{r['method']}@{r['steps']}"
        cells[(r["dim"], r["dim_y"], r.get("sigma_y_fixed"))][col].append(r["sw"])
    cols = ["floor", "prior"] + [f"{m}@{s}" for m, s in methods]
    head = "| d | d_y | sigma_y | n | " + " | ".join(cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 4)]
    for (d, dy, sy), byc in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or -1)):
        sy_txt = "U(0,1)·s_max" if sy is None else f"{sy:g}"
        n = len(byc.get("floor", []))
        lines.append(f"| {d} | {dy} | {sy_txt} | {n} | " + " | ".join(_mean_se(byc.get(c, [])) for c in cols)
                     + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--solvers", nargs="+", default=["dps", "ddim"],
                    help="registered solver names; LABEL=SOLVER runs SOLVER as its own column LABEL (with "
                         "--hp keyed by LABEL), e.g. to compare settings of one solver")
    ap.add_argument("--steps", nargs="+", type=int, default=[20, 100])
    ap.add_argument("--dims", nargs="+", type=int, default=[8, 80, 800])
    ap.add_argument("--dys", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--problems", type=int, default=20, help="problems per (d, d_y) cell")
    ap.add_argument("--samples", type=int, default=1000, help="samples per problem")
    ap.add_argument("--sigma-y", type=float, nargs="+", default=None,
                    help="fixed noise levels (TMPD variant); default MCGdiff's random sigma_y")
    ap.add_argument("--quick", action="store_true", help="small grid: d in {8, 80}, d_y in {1, 2}, 3 problems")
    ap.add_argument("--name", default=None, help="results folder name (default gmm_posterior[_quick])")
    ap.add_argument("--hp", default="{}", help='JSON dict of per-solver hyperparameters, {"dps": {"zeta": 1}}')
    ap.add_argument("--table-only", action="store_true",
                    help="run nothing: rebuild table.md from results.jsonl (missing cells stay empty)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (small matrices: 1 is fastest)")
    ap.add_argument("--metric", choices=["sw2", "sw1"], default="sw2",
                    help="sliced W2 (default) or the mean of 1-D W1 distances (the MCGdiff authors' metric)")
    ap.add_argument("--smc-mode", choices=["pooled", "draws"], default="pooled",
                    help="SMC solvers: samples from the populations of ceil(samples / particles) runs "
                         "(pooled, as the papers) or one draw from each of `samples` runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.dims, args.dys, args.problems, args.samples = [8, 80], [1, 2], 3, 256
    solver_of = dict(s.split("=", 1) if "=" in s else (s, s) for s in args.solvers)
    unknown = [s for s in solver_of.values() if s not in invsolve.solvers.available()]
    if unknown:
        ap.error(f"unknown solvers {unknown}; available: {sorted(invsolve.solvers.available())}")
    hp = json.loads(args.hp)
    name = args.name or ("gmm_posterior_quick" if args.quick else "gmm_posterior")
    out = RESULTS / name
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    done = {_key(r) for r in rows}
    sigmas = args.sigma_y if args.sigma_y else [None]
    methods = [(m, s) for m in solver_of for s in args.steps]
    jobs = [(d, dy, sy, p) for d in args.dims for dy in args.dys for sy in sigmas for p in range(args.problems)]
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(args.threads)

    def _extra(method: str) -> dict:
        """Key fields beyond the defaults (none for the default metric and non-SMC solvers, so rows
        written before these options existed keep their keys)."""
        out = {"metric": args.metric} if args.metric != "sw2" else {}
        if method in solver_of and is_smc(solver_of[method]):
            out["smc_mode"] = args.smc_mode
        return out
    with path.open("a") as fh:
        for d, dy, sy, p in tqdm(jobs, desc="gmm problems"):
            base = {"dim": d, "dim_y": dy, "problem": p, "sigma_y_fixed": sy}
            todo = [m for m in [("floor", 0), ("prior", 0), *methods]
                    if _key({**base, "method": m[0], "steps": m[1], "hp": _hp_key(hp, m[0]),
                             **_extra(m[0])}) not in done]
            if not todo or args.table_only:
                continue
            case = make_case(d, dy, p, sigma_y=sy)
            refs = metric_references(case, args.samples, p, args.metric)
            for method, steps in todo:
                if method in refs:
                    res = {"sw": refs[method], "nfe": 0, "seconds": 0.0}
                else:
                    res = score(case, solver_of[method], args.samples, steps, p, args.metric, args.smc_mode,
                                **hp.get(method, {}))
                row = {**base, "method": method, "steps": steps, "sigma_y": case.sigma_y,
                       "hp": _hp_key(hp, method), **_extra(method), **res}
                rows.append(row)
                fh.write(json.dumps(row) + "\n")
                fh.flush()
    md = table([r for r in rows if r["dim"] in args.dims and r["dim_y"] in args.dys
                and r.get("sigma_y_fixed") in sigmas and r.get("metric", "sw2") == args.metric
                and r.get("smc_mode", args.smc_mode) == args.smc_mode], methods, hp)
    what = "Sliced Wasserstein" if args.metric == "sw2" else "Mean over directions of the 1-D W1 distance"
    smc_cols = [m for m in solver_of if is_smc(solver_of[m])]
    smc_note = (f" SMC columns ({', '.join(smc_cols)}): " + (
        "samples resampled from the final weighted populations of ceil(samples / particles) runs."
        if args.smc_mode == "pooled" else "one draw from each of `samples` runs.")) if smc_cols else ""
    header = (f"{what} (100 directions, {args.samples} samples) to exact posterior samples; "
              f"mean ± s.e. over the n problems per cell in results.jsonl. Hyperparameters: paper defaults "
              f"except {json.dumps(hp)}. Command: python experiments/gmm_posterior.py "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}{smc_note}\n\n")
    if args.metric == "sw1":
        labels = {k: v for k, v in (("MCGdiff", "mcgdiff"), ("DDRM", "ddrm"), ("DPS", "dps")) if v in solver_of}
        md += ("\n\nBeside the authors' own code (issue 12: Badr-MOUFAD/dcps gmm.py run on CPU, 10 "
               "problems, 5 at d = 80 with 100 steps; other draws of the same problem distribution), "
               "absolute and over each side's floor:\n\n" + authors_table(rows, labels))
    (out / "table.md").write_text(header + md + "\n")
    print(header + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
