"""Shared machinery of the paper-table scripts (experiments/paper_*.py).

A script describes its paper (tasks with the paper's exact operators, the published numbers with
their citation, the data it was measured on) as a ``Paper``; ``main(paper)`` then

- with ``--dry-run``: prints the generated evaluation config and the table skeleton (published numbers,
  ours blank), running nothing and needing no file;
- without the checkpoint or the data: exits with code 2 and says which files are expected and where
  to get them (``priors.hub.SOURCES``);
- otherwise: runs ``invsolve.evaluate`` on the generated config (resumable: rerun to continue), then
  prints ours beside the published numbers and writes ``OUT/paper_table.md``.

Units: invsolve images are in [0, 1]. The DPS and DAPS codes work in [-1, 1], so their sigma_y = 0.05
is 0.025 here (exact for the linear tasks and HDR; for phase retrieval |F(2x - 1)| is not 2 |F(x)|, so
0.025 is the same noise relative to the image range, not the same realisation). DiffPIR adds noise
of std 0.05 in [0, 1] units (12.75/255 in its main_ddpir_*.py), so 0.05 stays 0.05.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
RESULTS = Path(__file__).parent / "results"


@dataclass
class Task:
    """One column of a paper's table: an operator of the registry with the paper's settings, or
    ``operator=None`` when invsolve has no such operator (printed as not available)."""

    key: str
    label: str
    operator: str | None
    kwargs: dict = field(default_factory=dict)
    note: str = ""


@dataclass
class Method:
    """One row of published numbers and the invsolve solver that reproduces it (``preset="paper"``).

    ``psnr`` / ``ssim``: task key -> published value. ``prior_kwargs``: extra keyword arguments of the
    prior for this solver (DAPS queries the network through its VPPrecond conversion).
    ``optional``: run only with ``--all``.
    """

    solver: str
    label: str
    psnr: dict[str, float]
    ssim: dict[str, float] = field(default_factory=dict)
    prior_kwargs: dict = field(default_factory=dict)
    optional: bool = False


@dataclass
class Paper:
    """Everything a paper-table script needs (see the module docstring)."""

    name: str
    title: str
    citation: str
    table: str
    tasks: list[Task]
    methods: list[Method]
    noise_sigma: float
    noise_note: str
    n_default: int
    data_help: str
    files: list[str] | None = None
    best_of: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    prior: str = "ffhq-256-dps"
    image_size: int = 256
    checkpoint_arg: str | None = "path"
    """The prior's keyword that takes ``--checkpoint`` (None: the prior needs no file)."""

    def task(self, key: str) -> Task:
        return next(t for t in self.tasks if t.key == key)


# --- configuration -----------------------------------------------------------------------------------
def methods_to_run(paper: Paper, run_all: bool) -> list[Method]:
    return [m for m in paper.methods if run_all or not m.optional]


def data_spec(paper: Paper, folder: str, n: int) -> dict:
    """The folder data set: the paper's images resized (shorter side) and centre-cropped to 256."""
    spec = {"name": "folder", "path": str(folder), "size": paper.image_size,
            "resize": paper.image_size, "n": n, "channels": 3}
    if paper.files is not None:
        spec["files"] = paper.files[:n]
    return spec


def build_config(paper: Paper, checkpoint: str, folder: str, n: int, *, device: str = "cpu",
                 batch_size: int = 4, steps: int | None = None, seed: int = 0,
                 run_all: bool = False, lpips: str | None = None,
                 only: set[str] | None = None) -> dict:
    """The evaluation config: one grid per method over the tasks it has published numbers for
    (``only``: restrict to these task keys)."""
    grids = []
    for m in methods_to_run(paper, run_all):
        ops = []
        for t in paper.tasks:
            if t.operator is None or t.key not in m.psnr or (only is not None and t.key not in only):
                continue
            ops.append({"name": t.operator, "noise_sigma": paper.noise_sigma, "kwargs": dict(t.kwargs),
                        "label": t.key})
        if not ops:
            continue
        solver = {"name": m.solver, "preset": "paper", "label": m.label}
        if steps is not None:
            solver["steps"] = steps
        prior_kwargs = dict(m.prior_kwargs)
        if paper.checkpoint_arg is not None:
            prior_kwargs[paper.checkpoint_arg] = str(checkpoint)
        grids.append({"data": data_spec(paper, folder, n), "operators": ops,
                      "priors": [{"name": paper.prior, "label": paper.prior, "kwargs": prior_kwargs}],
                      "solvers": [solver], "metrics": ["psnr", "ssim"] + (["lpips"] if lpips else [])})
    return {"name": paper.name, "seed": seed, "device": device, "dtype": "float32",
            "batch_size": batch_size, "figure_items": 4, "lpips_backbone": lpips, "grids": grids}


# --- inputs ------------------------------------------------------------------------------------------
def missing_inputs(paper: Paper, checkpoint: str | None, folder: str | None, n: int) -> list[str]:
    """What is missing, each line naming the file expected and where to get it (empty: all there)."""
    from invsolve.priors.hub import SOURCES

    problems = []
    ckpt_help = SOURCES.get(paper.prior, "the model's home page")
    if checkpoint is None:
        problems.append(f"--checkpoint: the guided-diffusion FFHQ-256 checkpoint is needed: {ckpt_help}")
    elif not Path(checkpoint).is_file():
        problems.append(f"--checkpoint {checkpoint} does not exist; expected {ckpt_help}")
    if folder is None:
        problems.append(f"--data: a folder of test images is needed: {paper.data_help}")
        return problems
    root = Path(folder)
    if not root.is_dir():
        problems.append(f"--data {folder} is not a folder; expected {paper.data_help}")
        return problems
    if paper.files is not None:
        absent = [f for f in paper.files[:n] if not (root / f).is_file()]
        if absent:
            problems.append(f"--data {folder} lacks {len(absent)} of the {min(n, len(paper.files))} "
                            f"listed images (e.g. {', '.join(absent[:3])}); expected {paper.data_help}")
        images = [root / f for f in paper.files[:n] if (root / f).is_file()]
    else:
        images = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(images) < n:
            problems.append(f"--data {folder} holds {len(images)} PNG/JPEG images, fewer than --n {n}; "
                            f"expected {paper.data_help}")
    if images:
        from PIL import Image

        with Image.open(images[0]) as im:
            if min(im.size) < paper.image_size:
                problems.append(f"{images[0]} is {im.size[0]} x {im.size[1]}, smaller than "
                                f"{paper.image_size} x {paper.image_size}; expected {paper.data_help}")
    return problems


# --- the table -----------------------------------------------------------------------------------------
def _mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    m = sum(values) / n
    se = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n) if n > 1 else float("nan")
    return m, se


def collect(paper: Paper, configs: list[dict], out: Path) -> dict[tuple[str, str], dict]:
    """Per (method label, task key): per-item PSNR/SSIM from the rows (best of the seeds for the
    tasks in ``paper.best_of``, the best run chosen by PSNR as in the DAPS code), n, and failures."""
    from invsolve.evaluation.config import load_config
    from invsolve.evaluation.plan import make_plan
    from invsolve.evaluation.rows import canonical, latest_by_key, read_rows

    rows = latest_by_key(read_rows(out / "results.jsonl"))
    runs: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for cfg in configs:
        plan = make_plan(load_config(cfg))
        for c, i in plan.tasks():
            cell = plan.cells[c]
            row = rows.get(canonical(cell.key(i)))
            if row is None:
                continue
            runs.setdefault((cell.solver.label, cell.operator.label), {}) \
                .setdefault(cell.data.ids[i], []).append(row)
    found = {}
    for k, items in runs.items():
        psnr, ssim, errors = [], [], []
        for item_rows in items.values():
            ok = [r for r in item_rows if not r.get("error")]
            errors += [r["error"] for r in item_rows if r.get("error")]
            if ok:
                best = max(ok, key=lambda r: r["metrics"]["psnr"])
                psnr.append(best["metrics"]["psnr"])
                ssim.append(best["metrics"]["ssim"])
        found[k] = {"psnr": psnr, "ssim": ssim, "errors": errors,
                    "runs": max(len(v) for v in items.values())}
    return found


def render(paper: Paper, found: dict | None, run_all: bool) -> str:
    """Markdown: per method, one line per task with ours (mean ± s.e., n) beside the published."""
    lines = [f"# {paper.title}", "", f"Published: {paper.citation}, {paper.table}.", "",
             f"Noise: sigma_y = {paper.noise_sigma:g} on [0, 1] images ({paper.noise_note}).", ""]
    for m in methods_to_run(paper, run_all):
        lines += [f"## {m.label} (invsolve solver `{m.solver}`, preset `paper`)", "",
                  "| task | PSNR ours | PSNR published | Δ | SSIM ours | SSIM published | n |",
                  "|---|---|---|---|---|---|---|"]
        for t in paper.tasks:
            if t.key not in m.psnr:
                continue
            pub_p, pub_s = m.psnr[t.key], m.ssim.get(t.key)
            pub_s_text = f"{pub_s:.3f}" if pub_s is not None else "–"
            label = t.label + (f" (best of {paper.best_of[t.key]})" if t.key in paper.best_of else "")
            if t.operator is None:
                lines.append(f"| {label} | not available | {pub_p:.2f} | | | {pub_s_text} | |")
                continue
            got = (found or {}).get((m.label, t.key))
            if not got or not got["psnr"]:
                why = "not run" if not got else f"failed: {got['errors'][0][:70]}"
                lines.append(f"| {label} | {why} | {pub_p:.2f} | | | {pub_s_text} | 0 |")
                continue
            p, ps = _mean_se(got["psnr"])
            s, ss = _mean_se(got["ssim"])
            se_p = f" ± {ps:.2f}" if not math.isnan(ps) else ""
            se_s = f" ± {ss:.3f}" if not math.isnan(ss) else ""
            lines.append(f"| {label} | {p:.2f}{se_p} | {pub_p:.2f} | {p - pub_p:+.2f} | {s:.3f}{se_s} | "
                         f"{pub_s_text} | {len(got['psnr'])} |")
        lines.append("")
    notes = [f"{t.label}: {t.note}" for t in paper.tasks if t.note] + paper.notes
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------------
def parser(paper: Paper, doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="the guided-diffusion FFHQ-256 checkpoint (ffhq_10m.pt)")
    ap.add_argument("--data", help="folder of the paper's test images (see above)")
    ap.add_argument("--n", type=int, default=paper.n_default,
                    help=f"number of images (default {paper.n_default}, the paper's)")
    ap.add_argument("--out", default=None, help=f"output folder (default experiments/results/{paper.name})")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None,
                    help="override every solver's steps (smoke runs; the paper's are the presets')")
    ap.add_argument("--tasks", default=None, help="comma-separated task keys to run (default all)")
    ap.add_argument("--lpips", default=None, help="local AlexNet weights for LPIPS (never downloaded)")
    ap.add_argument("--all", action="store_true", help="also run the optional comparison methods")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the generated config and the table skeleton; run nothing")
    return ap


def main(paper: Paper, doc: str, argv: list[str] | None = None) -> int:
    """Entry point of a paper-table script; returns the exit code (2: inputs missing)."""
    args = parser(paper, doc).parse_args(argv)
    if args.n < 1:
        print("--n must be >= 1", file=sys.stderr)
        return 2
    only = None if args.tasks is None else {k.strip() for k in args.tasks.split(",") if k.strip()}
    unknown = sorted((only or set()) - {t.key for t in paper.tasks})
    if unknown:
        print(f"unknown task keys {unknown}; tasks: {[t.key for t in paper.tasks]}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else RESULTS / paper.name
    kw = {"device": args.device, "batch_size": args.batch_size, "steps": args.steps,
          "run_all": args.all, "lpips": args.lpips, "only": only}
    checkpoint = args.checkpoint or "PATH/TO/ffhq_10m.pt"
    folder = args.data or "PATH/TO/IMAGES"
    configs = [build_config(paper, checkpoint, folder, args.n, **kw)]
    for key, runs in paper.best_of.items():  # extra runs (other seeds) of the best-of tasks
        if only is None or key in only:
            configs += [build_config(paper, checkpoint, folder, args.n, seed=s,
                                     **{**kw, "only": {key}}) for s in range(1, runs)]
    configs = [c for c in configs if c["grids"]]
    if args.dry_run:
        from invsolve.evaluation.config import load_config

        for cfg in configs:
            load_config(cfg)  # validates names and keys; loads nothing
        print(f"# generated config ({len(configs)} evaluation(s); the extra ones are the other runs "
              "of the best-of tasks)")
        print(yaml.safe_dump(configs[0], sort_keys=False))
        print(render(paper, None, args.all))
        return 0
    problems = missing_inputs(paper, args.checkpoint, args.data, args.n)
    if problems:
        print(f"{paper.name}: cannot run, inputs are missing:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        print("(use --dry-run to see the configuration without any file)", file=sys.stderr)
        return 2
    import invsolve

    for cfg in configs[1:] + configs[:1]:  # the main config last: its table.md, grid.png, config.yaml
        invsolve.evaluate(cfg, out)
    found = collect(paper, configs, out)
    text = render(paper, found, args.all)
    (out / "paper_table.md").write_text(text)
    (out / "paper_configs.json").write_text(json.dumps(configs, indent=1) + "\n")
    print(text)
    print(f"rows: {out / 'results.jsonl'}\ntable: {out / 'paper_table.md'}")
    return 0
