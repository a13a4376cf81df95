"""Image restoration with the shipped ``natural-rgb`` prior on held-out photo crops: every applicable
posterior solver beside the classical baselines, on one table.

Data: crops of the held-out photo (natural-rgb-test, chelsea; the prior never saw it), ``--size``
pixels square; the test split for the table, the disjoint validation split for choosing the
baselines' weights. Tasks (noise sigma_y = 0.025 on [0, 1] images, the DPS/DAPS 0.05 in [-1, 1]):
SR x4 (bicubic kernel), box inpainting (centred half-size box), random inpainting (70 % missing),
Gaussian blur (15 x 15, std 2) and motion blur (15 x 15; kernels scaled down from the papers'
61 x 61 at 256 to the crop size), Fourier phase retrieval (oversampling 2).

Solvers: every posterior solver of invsolve at its defaults with one step budget (``--steps``,
default 100; NFE per solve in the table), except the SMC samplers (mcgdiff, tds: see
experiments/smc_*.py), DDIM (an unconditional sampler) and, unless asked for, D-Flow (costly). A solver that cannot handle an operator
records its refusal in the rows. Baselines (invsolve.evaluation.baselines): bicubic (SR), biharmonic
(inpainting), TV and Tikhonov with the best weight on the validation split (``invsolve tune`` with a
grid over the weight; presets in OUT/tune/), A^+ y.

Options for the prior comparison of the closing notes: ``--noise`` (sigma_y; the tuned baseline
weights follow it), ``--samples 1 4`` (each posterior solver also scored on the mean of 4 samples,
the posterior-mean estimate; NFE per chain), ``--prior-path DIR`` (an ``invsolve train`` run folder
instead of the shipped prior, e.g. a run in progress).

Writes OUT/{results.jsonl, table.md, grid.png} (default experiments/results/image_restoration).
Resumable: rerun to continue. Rows are keyed by the prior's name, not its weights: after
retraining a prior, write to a fresh ``--out``. Small settings: ``--quick`` (2 test crops, 20 steps).
    python experiments/image_restoration.py [--n 8] [--steps 100] [--size 32] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from restoration_common import (
    evaluate_and_print,
    parser,
    posterior_solvers,
    prior_spec,
    tune_weight,
)

OUT = Path(__file__).parent / "results" / "image_restoration"
NOISE = 0.025
TASKS = {
    "sr4": ("sr4", {}),
    "inpaint_box": ("inpaint_box", {}),
    "inpaint_random": ("inpaint_random", {"missing": 0.7}),
    "blur_gauss": ("blur_gauss", {"kernel_size": 15, "std": 2.0}),
    "blur_motion": ("blur_motion", {"kernel_size": 15, "intensity": 0.5}),
    "phase_retrieval": ("phase_retrieval", {"oversample": 2.0}),
}
SOLVERS = ("dps", "mcg", "daps", "reddiff", "pigdm", "diffpir", "ddrm", "ot_ode", "pnp_flow",
           "flowchef")
"""Posterior solvers at their defaults (one step budget for all). D-Flow (``dflow``) is left out by
default: at 100 steps it backpropagates through ~2000 network calls per solve (add it with
``--solvers``)."""
TUNED = {"tv": [0.001, 0.003, 0.01, 0.02, 0.05, 0.1, 0.2],
         "tikhonov": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]}
"""Baselines whose weight is chosen on the validation split, and the grid of weights."""
OTHER = {"sr4": ["bicubic"], "inpaint_box": ["biharmonic"], "inpaint_random": ["biharmonic"]}
"""Task-specific baselines without weights; pinv (A^+ y) runs everywhere."""
LINEAR = {"sr4", "inpaint_box", "inpaint_random", "blur_gauss", "blur_motion"}


def op_spec(task: str, noise: float = NOISE) -> dict:
    name, kwargs = TASKS[task]
    return {"name": name, "noise_sigma": noise, "kwargs": kwargs, "label": task}


def tune_baseline(task: str, solver: str, args: argparse.Namespace, out: Path) -> Path:
    """The best weight of ``solver`` on ``task`` on the validation crops, as a preset file."""
    data = {"name": "natural-rgb-test", "size": args.size, "n": args.n_val, "split": "val"}
    return tune_weight(f"{task}-{solver}", data, op_spec(task, args.noise), "natural-rgb", solver, TUNED[solver],
                       out / "tune" / f"{task}-{solver}", 8, f"{task:16s} {solver:9s}")


def build_config(args: argparse.Namespace, presets: dict[tuple[str, str], Path]) -> dict:
    grids = []
    prior = prior_spec(args)
    for task in args.tasks:
        solvers = posterior_solvers(args)
        solvers += [{"name": b, "label": f"{b} (baseline)"} for b in OTHER.get(task, [])]
        solvers += [{"name": b, "preset": str(presets[task, b]), "label": f"{b} (val-tuned)"}
                    for b in TUNED if (task, b) in presets]
        solvers.append({"name": "pinv", "label": "A⁺y (baseline)"})
        grids.append({"data": {"name": "natural-rgb-test", "size": args.size, "n": args.n},
                      "operators": [op_spec(task, args.noise)], "priors": [prior], "solvers": solvers,
                      "metrics": ["psnr", "ssim", "rel_l2"]})
    return {"name": "image_restoration", "seed": 0, "device": args.device, "batch_size": args.n,
            "figure_items": 2, "threads": 1 if args.device == "cpu" else None, "grids": grids}


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, SOLVERS, OUT, n_val=4, quick="2 test and 2 validation crops, 20 steps",
                prior="natural-rgb")
    ap.add_argument("--n", type=int, default=8, help="test crops")
    ap.add_argument("--size", type=int, default=32, help="crop size in pixels")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
    ap.add_argument("--noise", type=float, default=NOISE, help="sigma_y on [0, 1] images")
    args = ap.parse_args(argv)
    if args.noise < 0:
        print("--noise must be >= 0", file=sys.stderr)
        return 2
    if args.quick:
        args.n, args.n_val, args.steps = 2, 2, 20
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.solvers = [s for s in args.solvers.split(",") if s]
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        print(f"unknown tasks {unknown}; choose from {list(TASKS)}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    print("baseline weights on the validation crops:")
    presets = {(t, b): tune_baseline(t, b, args, out) for t in args.tasks if t in LINEAR for b in TUNED}
    return evaluate_and_print(build_config(args, presets), out)


if __name__ == "__main__":
    sys.exit(main())
