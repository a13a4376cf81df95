"""Robustness matrix (issue 11): every solver x task x noise level at default settings.

Each cell is the PSNR of one posterior sample per test image (mean over the images), or the error the
solver raised. A cell is flagged when it is non-finite, when the solver diverged (FloatingPointError),
or when it falls more than 1 dB below the trivial baseline (the ``pinv`` solver: A^+ y clipped to the
data range, i.e. zero filling for inpainting; the constant mid-grey image for phase retrieval) without
raising a ValueError that says the pair does not apply. The goal: no flagged cell.

Images: 32 x 32 crops of the held-out photo (natural-rgb prior) and the Shepp-Logan phantom at 32 x 32
(phantom-ct prior, CT and MRI). Blur kernels are scaled to the small images (Gaussian 9 x 9, std 1.5;
motion 9 x 9). Runs on the evaluation runner, so it is resumable and shardable:

    python experiments/robustness.py                       # full matrix -> experiments/results/robustness
    python experiments/robustness.py --solvers ddrm pigdm --tasks blur_gauss --sigmas 0
    python experiments/robustness.py --table-only          # rebuild matrix.md from the rows
    python experiments/robustness.py --table-only --recheck 4  # only the flagged cells, mean of 4 samples
    python experiments/robustness.py --table-only --recheck 4 --no-solve  # the same from the rows at hand
    python experiments/robustness.py --solvers mcg --tasks sr4 --hp mcg='{"zeta": 0.3}' --samples 4 \
        --out /tmp/mcg_zeta   # other settings, into another folder (flagged.md lists what was tried)

One posterior sample is a noisier estimate than the posterior mean (for a Gaussian posterior its
expected squared error is twice the mean's), so a correct sampler can sit below A^+ y where A^+ y is
already close to the posterior mean (SR from a smooth image). ``--recheck K`` reruns each flagged
cell with the mean of K samples (the evaluation's ``samples``) and lists it under the matrix: a cell
still more than 1 dB below the baseline there is a solver problem, not sampling noise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import invsolve
from invsolve.evaluation.config import dump_config, load_config
from invsolve.evaluation.plan import make_plan
from invsolve.evaluation.rows import canonical, latest_by_key, read_rows

OUT = Path(__file__).parent / "results" / "robustness"
IMAGE_TASKS = {
    "inpaint_random": {"missing": 0.7},
    "inpaint_box": {},
    "sr4": {},
    "blur_gauss": {"kernel_size": 9, "std": 1.5},
    "blur_motion": {"kernel_size": 9},
    "phase_retrieval": {},
}
PHANTOM_TASKS = {"ct_sparse": {}, "mri": {"acceleration": 4}}
SIGMAS = (0.0, 0.01, 0.05)
CAP = 40.0  # dB: flag below min(pinv, CAP) - 1; above 40 dB a sample differs only where y is blind
EXCLUDED = {"ddim": "samples the prior and ignores y by design"}


def solvers_to_run(names: list[str] | None) -> list[str]:
    available = sorted(invsolve.solvers.available())
    names = names or [n for n in invsolve.solvers.available(baselines=False) if n not in EXCLUDED]
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise SystemExit(f"unknown solvers {unknown}; available: {available}")
    return sorted(set(names) | {"pinv"})


def config(solvers: list[str], tasks: list[str], sigmas: list[float], size: int, n: int,
           hp: dict[str, dict], samples: int = 1) -> dict:
    """An evaluation config: one grid per (modality, noise level); ``samples`` > 1 scores the mean of
    that many samples. ``hp`` may hold a solver's ``steps``."""
    spec = []
    for s in solvers:
        options = dict(hp.get(s, {}))
        steps = options.pop("steps", None)  # the config takes steps beside hp, not in it
        spec.append({"name": s, **({"steps": steps} if steps else {}), **({"hp": options} if options else {}),
                     **({"samples": samples} if samples > 1 else {})})
    grids = []
    for sigma in sigmas:
        ops = [{"name": t, "noise_sigma": sigma, "kwargs": IMAGE_TASKS[t]} for t in tasks if t in IMAGE_TASKS]
        if ops:
            grids.append({"data": {"name": "natural-rgb-test", "size": size, "n": n},
                          "operators": ops, "priors": ["natural-rgb"], "solvers": spec})
        ops = [{"name": t, "noise_sigma": sigma, "kwargs": PHANTOM_TASKS[t]} for t in tasks
               if t in PHANTOM_TASKS]
        if ops:
            grids.append({"data": {"name": "shepp-logan", "size": size}, "operators": ops,
                          "priors": ["phantom-ct"], "solvers": spec})
    return {"name": "robustness", "seed": 0, "device": "cpu", "dtype": "float32", "batch_size": n,
            "figure_items": 1, "threads": 1, "grids": grids}


def _cell(rows: list[dict]) -> tuple[float | None, str | None]:
    """(mean PSNR, error) of the rows of one (task, sigma, solver) cell."""
    errors = [r["error"] for r in rows if r.get("error")]
    if errors:
        return None, errors[0]
    values = [r["metrics"].get("psnr") for r in rows]
    if any(v is None or not math.isfinite(v) for v in values):
        return float("nan"), None
    return sum(values) / len(values), None


def current_rows(out: Path) -> list[dict]:
    """The latest row of each key that the matrix's and the recheck's configs hold as the code
    resolves them now: rows of older hyperparameters (a solver option added since) are left out, and
    of a prior's earlier weights replaced by their rerun (``prior_weights``)."""
    rows = latest_by_key(read_rows(out / "results.jsonl"))
    configs = [out / name for name in ("config.yaml", "recheck_config.yaml") if (out / name).exists()]
    if not configs:  # rows without their config: every key's latest row
        return list(rows.values())
    keys = set()
    for path in configs:
        plan = make_plan(load_config(path))
        keys |= {canonical(plan.key(t)) for t in plan.tasks()}
    return [r for k, r in rows.items() if k in keys]


def matrix(out: Path, samples: int = 1) -> tuple[str, list[tuple[str, float, str]]]:
    """The markdown matrix from the rows of one sample (or of the mean of ``samples``), and its
    flagged (task, sigma, solver) cells."""
    rows = [r for r in current_rows(out) if r["key"]["solver"].get("samples", 1) == samples]
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        key = r["key"]
        task, sigma = key["operator"]["name"], key["noise_sigma"]
        cells[(task, sigma, key["solver"]["name"])].append(r)
    tasks = [t for t in (*IMAGE_TASKS, *PHANTOM_TASKS) if any(k[0] == t for k in cells)]
    solvers = sorted({k[2] for k in cells} - {"pinv"})
    sigmas = sorted({k[1] for k in cells})
    lines = ["| task | sigma_y | pinv | " + " | ".join(solvers) + " |",
             "|---|---|---|" + "---|" * len(solvers)]
    notes, flagged_cells = {}, []
    for task in tasks:
        for sigma in sigmas:
            if (task, sigma, "pinv") not in cells:
                continue
            base, _ = _cell(cells[(task, sigma, "pinv")])
            out_cells = []
            for s in solvers:
                if (task, sigma, s) not in cells:
                    out_cells.append("")
                    continue
                value, error = _cell(cells[(task, sigma, s)])
                if error is not None:
                    kind = error.split(":")[0]
                    tag = len(notes.setdefault(error, f"[{len(notes) + 1}]")) and notes[error]
                    bad = kind != "ValueError"
                    if bad:
                        flagged_cells.append((task, sigma, s))
                    out_cells.append(f"{'**' if bad else ''}{kind} {tag}{'**' if bad else ''}")
                elif not math.isfinite(value):
                    out_cells.append("**non-finite**")
                    flagged_cells.append((task, sigma, s))
                elif base is not None and value < min(base, CAP) - 1.0:
                    out_cells.append(f"**{value:.2f}**")
                    flagged_cells.append((task, sigma, s))
                else:
                    out_cells.append(f"{value:.2f}")
            lines.append(f"| {task} | {sigma:g} | {base:.2f} | " + " | ".join(out_cells) + " |")
    lines.append("")
    lines += [f"{tag} {err}" for err, tag in notes.items()]
    return "\n".join(lines), flagged_cells


def recheck_config(cells: list[tuple[str, float, str]], k: int, size: int, n: int) -> dict | None:
    """The flagged (task, sigma, solver) cells again, each scored on the mean of k samples: one grid
    of ``config`` per cell."""
    grids = [g for task, sigma, solver in cells for g in config([solver], [task], [sigma], size, n, {}, k)["grids"]]
    if not grids:
        return None
    return {**config([], [], [], size, n, {}), "figure_items": 0, "grids": grids}


def recheck_table(out: Path, cells: list[tuple[str, float, str]], k: int) -> tuple[str, int]:
    """Markdown rows: each flagged cell, its one-sample PSNR, the mean-of-k PSNR, the baseline."""
    rows = current_rows(out)
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        key = r["key"]
        by[(key["operator"]["name"], key["noise_sigma"], key["solver"]["name"],
            key["solver"].get("samples", 1))].append(r)
    lines = [f"## Flagged cells on the mean of {k} samples", "",
             "| task | sigma_y | solver | pinv | one sample | mean of " + str(k) + " | still flagged |",
             "|---|---|---|---|---|---|---|"]
    still = 0
    for task, sigma, solver in cells:
        base, _ = _cell(by[(task, sigma, "pinv", 1)])
        value, one_error = _cell(by[(task, sigma, solver, 1)])
        one = one_error.split(":")[0] if one_error else f"{value:.2f}"  # a flagged error: FloatingPointError
        if not by[(task, sigma, solver, k)]:
            lines.append(f"| {task} | {sigma:g} | {solver} | {base:.2f} | {one} | not run | |")
            continue
        mean, error = _cell(by[(task, sigma, solver, k)])
        bad = error is not None or not math.isfinite(mean) or mean < min(base, CAP) - 1.0
        still += bad
        shown = error.split(":")[0] if error else f"{mean:.2f}"
        lines.append(f"| {task} | {sigma:g} | {solver} | {base:.2f} | {one} | {shown} | "
                     f"{'**yes**' if bad else 'no'} |")
    lines.append("")
    lines.append(f"Still flagged on the mean of {k} samples: {still} of {len(cells)}.")
    return "\n".join(lines), still


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--solvers", nargs="+", default=None)
    ap.add_argument("--tasks", nargs="+", default=list(IMAGE_TASKS) + list(PHANTOM_TASKS))
    ap.add_argument("--sigmas", nargs="+", type=float, default=list(SIGMAS))
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--n", type=int, default=2, help="test crops of the photo (the phantom is one image)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--hp", nargs="+", default=[], metavar="SOLVER=JSON",
                    help="hyperparameters other than the defaults, e.g. mcg='{\"zeta\": 0.3}' (with --out "
                         "elsewhere: the matrix is of the defaults)")
    ap.add_argument("--samples", type=int, default=1, help="score the mean of this many samples")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--recheck", type=int, default=0, metavar="K",
                    help="rerun the flagged cells on the mean of K samples (K >= 2) and list them")
    ap.add_argument("--no-solve", action="store_true",
                    help="with --recheck: list the flagged cells from the rows at hand, run nothing")
    args = ap.parse_args(argv)
    if args.recheck == 1 or args.recheck < 0:
        raise SystemExit("--recheck takes K >= 2 (0: no recheck)")
    unknown = sorted(set(args.tasks) - set(IMAGE_TASKS) - set(PHANTOM_TASKS))
    if unknown:
        raise SystemExit(f"unknown tasks {unknown}")
    hp = {}
    for item in args.hp:
        name, _, text = item.partition("=")
        try:
            hp[name] = json.loads(text)
        except json.JSONDecodeError as err:
            raise SystemExit(f"--hp {item!r}: give SOLVER=JSON, e.g. mcg='{{\"zeta\": 0.3}}' ({err})") from None
    if (hp or args.samples > 1) and args.out.resolve() == OUT.resolve():
        raise SystemExit("--hp / --samples write rows that are not the matrix's: give --out another folder")
    if not args.table_only:
        cfg = config(solvers_to_run(args.solvers), args.tasks, args.sigmas, args.size, args.n, hp, args.samples)
        invsolve.evaluate(cfg, args.out)
    text, cells = matrix(args.out, args.samples)
    flagged = len(cells)
    what = "one sample" if args.samples == 1 else f"the mean of {args.samples} samples"
    header = (f"# Robustness matrix: PSNR (dB) of {what} at {'other' if hp else 'default'} settings, {args.size} x "
              f"{args.size}\n\nRebuild: `python experiments/robustness.py --table-only`. Bold: "
              "non-finite, diverged, or more than 1 dB below min(pinv, 40 dB) without a ValueError. Noiseless "
              "linear problems end with the projection onto {A x = y} (``noiseless_projection``). Excluded: "
              + "; ".join(f"{k} ({v})" for k, v in EXCLUDED.items()) + f". Flagged cells: {flagged}."
              + (" What was tried on the cells still flagged: flagged.md." if (args.out / "flagged.md").exists()
                 else "") + "\n\n")
    if args.recheck:
        cfg = recheck_config(cells, args.recheck, args.size, args.n)
        if cfg is not None and args.no_solve:  # list the cells; those without rows show "not run"
            (args.out / "recheck_config.yaml").write_text(dump_config(load_config(cfg)))
        elif cfg is not None:
            matrix_cfg = args.out / "config.yaml"
            kept = matrix_cfg.read_text() if matrix_cfg.exists() else None
            invsolve.evaluate(cfg, args.out)  # writes config.yaml: keep the matrix's, file the recheck's
            matrix_cfg.replace(args.out / "recheck_config.yaml")
            if kept is not None:
                matrix_cfg.write_text(kept)
        extra, _ = recheck_table(args.out, cells, args.recheck)
        text += "\n\n" + extra
    (args.out / "matrix.md").write_text(header + text + "\n")
    print(header + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
