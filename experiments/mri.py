"""Single-coil Cartesian MRI of real images at 4x and 8x acceleration, with the shipped ``phantom-ct``
prior (random ellipse phantoms) against the zero-filled inverse FFT and TV.

Operator ``mri`` on real (1, H, W) images: y = M F x (orthonormal centred FFT, whole k-space
columns kept: random lines plus a fully sampled centre, mask seed 0), complex Gaussian noise of
std 0.01 per k-space value (as 0.01 per pixel in image space: F is orthonormal). Images: two
random ellipse phantoms of the test split (seed 102) and scikit-image's Shepp-Logan phantom at
128 x 128, and pydicom's real 64 x 64 MR slice (MR_small.dcm, scaled to [0, 1]; far from the
prior's training images).

Baselines (invsolve.evaluation.baselines): zero-filled (A^T y), TV and Tikhonov with the best weight
on the validation phantoms (seed 101; ``invsolve tune`` with a grid over the weight, per
acceleration). Posterior solvers at their defaults with one step budget (``--steps``).

Writes OUT/{results.jsonl, table.md, grid.png} (default experiments/results/mri).
Rows are keyed by the prior's name, not its weights: after retraining a prior, use a fresh
``--out``.
    python experiments/mri.py [--steps 100] [--quick]
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

OUT = Path(__file__).parent / "results" / "mri"
NOISE = 0.01
ACCELERATIONS = (4, 8)
SOLVERS = ("pnp_flow", "pigdm", "diffpir", "dps", "reddiff", "daps")
TUNED = {"tv": [0.001, 0.003, 0.01, 0.03, 0.1], "tikhonov": [1e-5, 1e-4, 1e-3, 1e-2, 0.1]}
DATA = ({"name": "ellipse-phantoms", "n": 2, "size": 128}, {"name": "shepp-logan", "size": 128},
        {"name": "mr-slice"})


def op_spec(acceleration: int) -> dict:
    return {"name": "mri", "noise_sigma": NOISE,
            "kwargs": {"acceleration": acceleration, "mask": "random", "seed": 0},
            "label": f"{acceleration}x, σ = {NOISE:g}"}


def tune_baseline(solver: str, acceleration: int, n_val: int, out: Path) -> Path:
    data = {"name": "ellipse-phantoms", "n": n_val, "size": 128, "split": "val"}
    return tune_weight(f"mri{acceleration}-{solver}", data, op_spec(acceleration), "phantom-ct", solver,
                       TUNED[solver], out / "tune" / f"{acceleration}x-{solver}", n_val,
                       f"{acceleration}x {solver:9s}")


def build_config(args: argparse.Namespace, presets: dict[tuple[int, str], Path]) -> dict:
    grids = []
    for data in DATA:
        for acc in ACCELERATIONS:
            solvers = posterior_solvers(args)
            solvers.append({"name": "zero_filled", "label": "zero-filled (baseline)"})
            solvers += [{"name": b, "preset": str(presets[acc, b]), "label": f"{b} (val-tuned)"}
                        for b in TUNED]
            grids.append({"data": data, "operators": [op_spec(acc)], "priors": [prior_spec(args)],
                          "solvers": solvers, "metrics": ["psnr", "ssim", "rel_l2"]})
    return {"name": "mri", "seed": 0, "device": args.device, "batch_size": 2, "figure_items": 1,
            "threads": 1 if args.device == "cpu" else None, "grids": grids}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, SOLVERS, OUT, n_val=2, quick="20 steps", prior="phantom-ct").parse_args(argv)
    if args.quick:
        args.steps = 20
    args.solvers = [s for s in args.solvers.split(",") if s]
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    print("baseline weights on the validation phantoms:")
    presets = {(a, b): tune_baseline(b, a, args.n_val, out) for a in ACCELERATIONS for b in TUNED}
    return evaluate_and_print(build_config(args, presets), out)


if __name__ == "__main__":
    sys.exit(main())
