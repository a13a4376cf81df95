"""``invsolve demo``: solve a problem whose exact answer is known and show how close the solver gets.

The shipped default prior is the analytic 25-component Gaussian mixture (no download): a random
2 x 8 matrix measures a draw from it, DPS samples the posterior, and the samples are compared with
exact posterior samples (sliced Wasserstein) beside the floor and the prior. A scatter plot of the
first two coordinates is written to ``<out>/demo.png``.
"""

from __future__ import annotations

from pathlib import Path

import torch

import invsolve
from invsolve.evaluation.gmm import make_case
from invsolve.evaluation.metrics import sliced_wasserstein


def run_demo(steps: int = 100, samples: int = 512, seed: int = 0, out: str | Path = "invsolve-demo") -> int:
    case = make_case(dim=8, dim_y=2, seed=seed)
    print(f"problem: {case.problem}")
    exact = case.posterior.sample(samples, seed=seed + 1)
    floor = sliced_wasserstein(case.posterior.sample(samples, seed=seed + 2), exact)
    prior_sw = sliced_wasserstein(case.prior.sample(samples, seed=seed + 3), exact)
    print(f"sliced Wasserstein to exact posterior samples ({samples} samples):")
    print(f"  floor (exact vs exact)    {floor:7.3f}")
    print(f"  prior (ignores y)         {prior_sw:7.3f}")
    results = {}
    for name in ("ddim", "dps"):
        res = invsolve.solve(case.problem.repeat(samples), case.prior, name, steps=steps, seed=seed + 7,
                             progress=True)
        results[name] = res.x
        sw = sliced_wasserstein(res.x, exact)
        print(f"  {name:<5} {steps:>4} steps        {sw:7.3f}   ({res.nfe} NFE, {res.seconds:.2f} s)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _plot(exact, case.prior.sample(samples, seed=seed + 3), results, out / "demo.png")
    print(f"figure: {out / 'demo.png'}")
    return 0


def _plot(exact: torch.Tensor, prior: torch.Tensor, results: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = {"prior": prior, "exact posterior": exact, **results}
    fig, axes = plt.subplots(1, len(sets), figsize=(3.2 * len(sets), 3.2), sharex=True, sharey=True)
    for ax, (title, pts) in zip(axes, sets.items()):
        ax.scatter(pts[:, 0].cpu(), pts[:, 1].cpu(), s=3, alpha=0.5)
        ax.set_title(title)
        ax.set_xlabel("x[0]")
    axes[0].set_ylabel("x[1]")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
