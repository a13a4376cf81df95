"""Sparse-view CT in the Learned Primal-Dual setup (Adler & Öktem 2018, arXiv 1707.06474; their
reference/reference_fbp_shepp.py): 30 parallel-beam views over 180 degrees of a 128 x 128 image,
Gaussian noise of std 5 % of the mean |sinogram|, on scikit-image's Shepp-Logan phantom resized to
128 x 128 with anti-aliasing and on pydicom's real CT slice, with the shipped ``phantom-ct`` prior
(trained on random ellipse phantoms only).

Baselines (invsolve.evaluation.baselines): filtered back-projection with the Hann filter (the LPD
paper's FBP baseline), and TV and Tikhonov with the best weight on the validation split (random
ellipse phantoms of seed 101, never seen in training; ``invsolve tune`` with a grid over the weight).
Posterior solvers at their defaults with one step budget (``--steps``).
The LPD setup uses ODL's modified Shepp-Logan phantom on [-64, 64]^2; here it is scikit-image's
phantom with the same geometry, so FBP's PSNR is not the LPD paper's.

Writes OUT/{results.jsonl, table.md, grid.png} (default experiments/results/ct_sparse_view).
Rows are keyed by the prior's name, not its weights: after retraining a prior, use a fresh
``--out``.
    python experiments/ct_sparse_view.py [--steps 100] [--quick]
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

OUT = Path(__file__).parent / "results" / "ct_sparse_view"
ANGLES, SIZE, NOISE_FRACTION = 30, 128, 0.05
SOLVERS = ("diffpir", "pigdm", "dps", "daps", "reddiff", "pnp_flow")
TUNED = {"tv": [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3], "tikhonov": [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3]}
"""Weight grids. The data term is divided by ||A||^2, the largest of a spread of CT singular values,
so the weights that balance it are far smaller than for masks or blurs."""


def noise_sigma(data_spec: dict) -> float:
    """5 % of the mean |A x| over the images of a data set (the LPD noise model)."""
    from invsolve import operators
    from invsolve.evaluation.config import load_config
    from invsolve.evaluation.data import load_dataset

    spec = load_config({"grids": [{"data": data_spec, "operators": ["ct_sparse"], "priors": ["phantom-ct"],
                                   "solvers": ["fbp"]}]}).grids[0].data
    x = load_dataset(spec).x.float()
    op = operators.build("ct_sparse", img_size=(1, SIZE, SIZE), angles=ANGLES)
    return NOISE_FRACTION * float(op.A(x).abs().mean())


def op_spec(sigma: float) -> dict:
    return {"name": "ct_sparse", "noise_sigma": sigma, "kwargs": {"angles": ANGLES},
            "label": f"30 views, σ = 5 % mean|sino| = {sigma:.3g}"}


def tune_baseline(solver: str, n_val: int, out: Path) -> Path:
    data = {"name": "ellipse-phantoms", "n": n_val, "size": SIZE, "split": "val"}
    return tune_weight(f"ct-{solver}", data, op_spec(noise_sigma(data)), "phantom-ct", solver, TUNED[solver],
                       out / "tune" / solver, n_val, f"{solver:9s}")


def build_config(args: argparse.Namespace, presets: dict[str, Path]) -> dict:
    solvers = posterior_solvers(args)
    solvers += [{"name": "fbp", "label": "FBP, Hann (baseline)"}]
    solvers += [{"name": b, "preset": str(p), "label": f"{b} (val-tuned)"} for b, p in presets.items()]
    grids = []
    for data in ({"name": "shepp-logan", "size": SIZE}, {"name": "ct-slice"}):
        grids.append({"data": data, "operators": [op_spec(noise_sigma(data))], "priors": [prior_spec(args)],
                      "solvers": solvers, "metrics": ["psnr", "ssim", "rel_l2"]})
    return {"name": "ct_sparse_view", "seed": 0, "device": args.device, "batch_size": 1,
            "figure_items": 1, "threads": 1 if args.device == "cpu" else None, "grids": grids}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, SOLVERS, OUT, n_val=2, quick="20 steps", prior="phantom-ct").parse_args(argv)
    if args.quick:
        args.steps = 20
    args.solvers = [s for s in args.solvers.split(",") if s]
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    print("baseline weights on the validation phantoms:")
    presets = {b: tune_baseline(b, args.n_val, out) for b in TUNED}
    return evaluate_and_print(build_config(args, presets), out)


if __name__ == "__main__":
    sys.exit(main())
