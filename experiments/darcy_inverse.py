"""Darcy inverse problem with the shipped ``darcy`` prior: permeability from sparse pressure sensors.

The DiffusionPDE inverse task (Huang et al. 2024, arXiv 2406.17763, Sec. 4): recover the binary
permeability a in {3, 12} on 64 x 64 from the pressure u at 123 seeded sensor cells (500 per 128^2,
the paper's density), sigma_y = 1e-5 (u is ~6e-3). Held-out fields: the darcy prior's test split.

The solvers run on x = log a (``darcy_sensors`` with param="log"), so every iterate is a valid
permeability. The prior is the shipped one with its units set to [log 3, log 12]: the fields are
binary, so the affine map of the network's {-1, 1} onto {log 3, log 12} is the same law as on a.
Scored by the error rate of the thresholded field (a > 7.5), DiffusionPDE's metric, and the relative
sensor misfit. One posterior sample per field; `--fields`, `--solvers` select the work.

Writes experiments/results/darcy_inverse/{results.jsonl,table.md,samples.png}.
Run: python experiments/darcy_inverse.py [--fields 4]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib
import torch

import invsolve
from invsolve import operators
from invsolve.priors.datasets import darcy_fields
from invsolve.priors.hub import WEIGHTS
from invsolve.priors.unet import build_prior

matplotlib.use("Agg")
import matplotlib.pyplot as plt

OUT = Path(__file__).parent / "results" / "darcy_inverse"
SOLVERS = {  # label: (solver, hyperparameters)
    "daps": ("daps", {"steps": 50, "ode_steps": 2, "mcmc_steps": 20, "lr": 1e-4}),
    "dps": ("dps", {"steps": 200, "zeta": 30.0}),
}


def log_prior(folder: Path = WEIGHTS / "darcy"):
    """The shipped darcy prior acting on log a (valid because its fields are binary)."""
    info = json.loads((folder / "prior.json").read_text())
    lo, hi = info["units"]
    info["units"] = [math.log(lo), math.log(hi)]
    return build_prior(info, torch.load(folder / "model.pt", weights_only=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fields", type=int, default=4)
    p.add_argument("--solvers", nargs="*", default=list(SOLVERS))
    a = p.parse_args()
    torch.set_num_threads(1)
    prior = log_prior()
    truth = darcy_fields(a.fields, "test")
    op = operators.build("darcy_sensors", size=64, noise_sigma=1e-5, param="log")
    problem = invsolve.Problem.simulate(op, truth.log(), seed=0)
    rows, shown = [], {}
    for label in a.solvers:
        name, hp = SOLVERS[label]
        res = invsolve.solve(problem, prior, name, seed=0, progress=True, **hp)
        a_hat = res.x.exp()
        err = ((a_hat > 7.5) != (truth > 7.5)).double().mean((1, 2, 3))
        with torch.no_grad():
            misfit = (op.A(res.x) - problem.y).norm(dim=1) / problem.y.norm(dim=1)
        for i in range(a.fields):
            rows.append({"solver": label, "hp": hp, "field": i, "error_rate": float(err[i]),
                         "rel_misfit": float(misfit[i]), "nfe": res.nfe, "seconds": res.seconds / a.fields})
        shown[label] = a_hat
        print(f"{label}: error rate {err.mean():.4f} (per field {[round(float(e), 4) for e in err]}), "
              f"relative misfit {misfit.mean():.4f}, NFE {res.nfe}, {res.seconds:.0f} s")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = ["| solver | hyperparameters | NFE | error rate (mean over fields) | relative sensor misfit |",
             "|---|---|---|---|---|"]
    for label in a.solvers:
        rs = [r for r in rows if r["solver"] == label]
        lines.append(f"| {label} | {json.dumps(rs[0]['hp'])} | {rs[0]['nfe']} | "
                     f"{sum(r['error_rate'] for r in rs) / len(rs):.4f} | "
                     f"{sum(r['rel_misfit'] for r in rs) / len(rs):.4f} |")
    (OUT / "table.md").write_text(
        f"# Darcy permeability from {op.n_sensors} pressure sensors (64 x 64, sigma_y 1e-5), shipped darcy "
        f"prior\n\nOne posterior sample for each of {a.fields} held-out fields (test split, seed 1). "
        "Error rate: fraction of cells on the wrong side of a = 7.5.\n\n" + "\n".join(lines) + "\n")
    fig, axes = plt.subplots(1 + len(shown), a.fields, figsize=(2 * a.fields, 2 * (1 + len(shown))),
                             squeeze=False)
    for i in range(a.fields):
        axes[0, i].imshow(truth[i, 0], vmin=3, vmax=12, cmap="viridis")
        axes[0, i].set_title(f"truth {i}", fontsize=8)
        for r, (label, a_hat) in enumerate(shown.items(), 1):
            axes[r, i].imshow(a_hat[i, 0].clamp(3, 12), vmin=3, vmax=12, cmap="viridis")
            axes[r, i].set_title(label, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(OUT / "samples.png", dpi=100)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
