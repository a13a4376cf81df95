"""Why an SMC run misses the floor: weight degeneracy along the path, mode weights, per-step ESS.

    python experiments/smc_diagnostics.py                   # d in {8, 80}, d_y in {1, 4}, 10 problems

For each mixture problem and solver (K particles, ``steps`` steps), ``runs`` independent runs:
- ``tv_run``: total variation between one run's mode weights (its weighted particles' mean
  responsibilities under the exact posterior) and the exact weights, mean over runs;
- ``tv_pool``: the same for the mode weights averaged over the runs: if it is far below ``tv_run``
  the error of one run is variance (too few effective particles), not bias;
- ``ess_step``: the smallest per-step ESS fraction of the weights the filter resamples with;
- ``ess_path``: the ESS fraction of the accumulated weights of one run that never resamples
  (``resample_below=0``): how many particles the whole path leaves, which the per-step ESS hides;
- ``sw_run`` / ``sw_pool``: sliced W2 (500 samples) of one run's population and of the pooled runs;
- ``chi2_prior``: sum_m pi_m^2 / w_m over the components (pi exact posterior weights, w prior weights):
  the variance factor of mode weights estimated by reweighting particles that chose their modes in
  prior proportions (1 = no loss; the effective number of particles for the mode weights is K / it).
Writes experiments/results/gmm_posterior_smc/{diagnostics.jsonl, diagnostics.md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

import invsolve
from invsolve.evaluation.calibration import mode_weights
from invsolve.evaluation.gmm import make_case
from invsolve.evaluation.metrics import sliced_wasserstein
from invsolve.solvers.smc import pooled_samples

OUT = Path(__file__).resolve().parent / "results" / "gmm_posterior_smc"
FIELDS = ("floor", "sw_run", "sw_pool", "tv_run", "tv_pool", "ess_step", "ess_path")


def weighted_modes(particles: torch.Tensor, logw: torch.Tensor, posterior) -> torch.Tensor:
    """Mode weights of one weighted population: sum_k w_k p(component | x_k)."""
    w = logw.exp().double()
    logp = posterior._component_logp(posterior._to_basis(particles.double()),
                                     posterior.evals.double()[None].expand(len(particles), -1))
    return (torch.softmax(logp, -1) * w[:, None]).sum(0)


def diagnose(case, solver: str, k: int, steps: int, runs: int, n: int, seed: int, hp: dict) -> dict:
    post = case.posterior
    exact_w = post.weights.double()
    res = invsolve.solve(case.problem.repeat(runs), case.prior, solver, steps=steps, particles=k,
                         seed=seed + 7, **hp)
    parts, logw = res.info["particles"], res.info["log_weights"]
    modes = torch.stack([weighted_modes(parts[r], logw[r], post) for r in range(runs)])
    ref = post.sample(n, seed=seed + 1)
    one = pooled_samples(parts[:1], logw[:1], n, seed=seed)
    pool = pooled_samples(parts, logw, n, seed=seed)
    flat = invsolve.solve(case.problem, case.prior, solver, steps=steps, particles=k, seed=seed + 7,
                          resample_below=0.0, **hp)
    path_ess = float(torch.exp(-torch.logsumexp(2 * flat.info["log_weights"][0], 0))) / k
    return {"floor": sliced_wasserstein(post.sample(n, seed=seed + 2), ref, seed=seed),
            "sw_run": sliced_wasserstein(one, ref, seed=seed), "sw_pool": sliced_wasserstein(pool, ref, seed=seed),
            "tv_run": float(0.5 * (modes - exact_w).abs().sum(1).mean()),
            "tv_pool": float(0.5 * (modes.mean(0) - exact_w).abs().sum()),
            "ess_step": float((res.info["ess"] / k).min(0).values.mean()),
            "ess_path": path_ess,
            "tv_exact_samples": float(0.5 * (mode_weights(post.sample(k, seed=seed + 3), post)
                                             - exact_w).abs().sum()),
            "chi2_prior": float((exact_w**2 / case.prior.weights.double()).sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--solvers", nargs="+", default=["mcgdiff", "tds"])
    ap.add_argument("--dims", nargs="+", type=int, default=[8, 80])
    ap.add_argument("--dys", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--problems", type=int, default=10)
    ap.add_argument("--particles", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--hp", default="{}", help="JSON per-solver hyperparameters")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    hp = json.loads(args.hp)
    path = OUT / "diagnostics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []

    def key(r):
        return (r["dim"], r["dim_y"], r["problem"], r["method"], r["particles"], r["steps"], r["runs"],
                r["hp"])

    done = {key(r) for r in rows}
    with path.open("a") as fh:
        for d in args.dims:
            for dy in args.dys:
                for p in tqdm(range(args.problems), desc=f"d={d} d_y={dy}"):
                    for m in args.solvers:
                        row = {"dim": d, "dim_y": dy, "problem": p, "method": m, "particles": args.particles,
                               "steps": args.steps, "runs": args.runs,
                               "hp": json.dumps(hp.get(m, {}), sort_keys=True)}
                        if key(row) in done:
                            continue
                        row |= diagnose(make_case(d, dy, p), m, args.particles, args.steps, args.runs,
                                        args.samples, p, hp.get(m, {}))
                        rows.append(row)
                        fh.write(json.dumps(row) + "\n")
                        fh.flush()
    acc = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if (r["particles"], r["steps"], r["runs"]) == (args.particles, args.steps, args.runs) and \
                r["problem"] < args.problems and r["hp"] == json.dumps(hp.get(r["method"], {}), sort_keys=True):
            for f in (*FIELDS, "tv_exact_samples", "chi2_prior"):
                acc[(r["dim"], r["dim_y"], r["method"])][f].append(r[f])
    lines = [(f"SMC diagnostics: {args.particles} particles, {args.steps} steps, {args.runs} runs per problem, "
             f"means over problems (n). tv_* = total variation of mode weights from the exact ones "
             f"(tv of {args.particles} exact samples: the sampling floor); ess_step = smallest per-step ESS "
             "fraction; ess_path = ESS fraction left by a run that never resamples; sw_* = sliced W2 "
             f"({args.samples} samples) of one run and of the pooled runs. Command: python "
             f"experiments/smc_diagnostics.py {' '.join(argv if argv is not None else sys.argv[1:])}"), "",
             "| d | d_y | method | n | " + " | ".join((*FIELDS, "tv exact samples", "chi2 prior")) + " |",
             "|" + "---|" * (len(FIELDS) + 6)]
    for (d, dy, m), c in sorted(acc.items()):
        vals = [sum(c[f]) / len(c[f]) for f in (*FIELDS, "tv_exact_samples", "chi2_prior")]
        lines.append(f"| {d} | {dy} | {m} | {len(c['floor'])} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    (OUT / "diagnostics.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
