"""What image_restoration.py, ct_sparse_view.py and mri.py share: the command-line options, the
validation-split tuning of a classical baseline's weight, and the evaluation run that prints the table."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path


def parser(doc: str, solvers: tuple[str, ...], out: Path, n_val: int, quick: str,
           prior: str) -> argparse.ArgumentParser:
    """The options every restoration experiment takes (add the script's own after this);
    ``prior``: the shipped prior the experiment uses unless ``--prior-path`` names a run folder."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100, help="step budget of every posterior solver")
    ap.add_argument("--n-val", type=int, default=n_val, help="validation items (baseline weights)")
    ap.add_argument("--solvers", default=",".join(solvers), help="comma-separated posterior solvers")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--out", default=str(out))
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--samples", type=int, nargs="+", default=[1],
                    help="score each posterior solver on the mean of k samples (the posterior-mean "
                    "estimate; NFE per chain), for each k given")
    ap.add_argument("--samples-for", nargs="+", default=None, metavar="SOLVER",
                    help="apply --samples k > 1 to these solvers only (default: all)")
    ap.add_argument("--prior-path", default=None, help="an invsolve train run folder, e.g. a run in "
                    f"progress under runs/ (default: the shipped {prior}); use a fresh --out with it")
    ap.set_defaults(shipped_prior=prior)
    return ap


def prior_spec(args: argparse.Namespace) -> str | dict:
    """The config entry of the posterior solvers' prior: the shipped one or ``--prior-path``'s run."""
    if args.prior_path is None:
        return args.shipped_prior
    return {"name": "trained", "kwargs": {"path": args.prior_path}, "label": Path(args.prior_path).name}


def posterior_solvers(args: argparse.Namespace) -> list[dict]:
    """Config entries of the posterior solvers of ``args.solvers`` at ``args.steps``, one per
    ``args.samples`` value k (k > 1: scored on the mean of k samples)."""
    if min(args.samples) < 1:
        raise SystemExit("--samples must be >= 1")
    only = getattr(args, "samples_for", None)
    return [{"name": s, "steps": args.steps, **({"samples": k} if k > 1 else {})}
            for s in args.solvers for k in args.samples if k == 1 or only is None or s in only]


def tune_weight(name: str, data: dict, operator: dict, prior: str, solver: str, choices: list[float],
                path: Path, batch_size: int, label: str) -> Path:
    """The best ``weight`` of a baseline ``solver`` over ``choices`` on the validation split ``data``
    (``invsolve tune`` with a grid), written as a preset file under ``path``."""
    from invsolve.evaluation.tune import tune

    cfg = {"name": name, "seed": 0, "batch_size": batch_size, "threads": 1, "data": data,
           "operator": operator, "prior": prior, "solver": {"name": solver},
           "space": {"weight": {"type": "categorical", "choices": choices}},
           "sampler": "grid", "trials": len(choices), "include_base": False}
    res = tune(cfg, path, progress=False)
    print(f"  {label} weight {res.best['weight']:<7g} val PSNR {res.value:.2f}")
    return res.preset


def evaluate_and_print(config: dict, out: Path) -> int:
    """Run the evaluation (solver warnings stay in the rows) and print its table."""
    import invsolve

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = invsolve.evaluate(config, out)
    print((res / "table.md").read_text())
    return 0
