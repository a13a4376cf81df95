"""Side-by-side of two GMM benchmark runs (experiments/gmm_posterior.py) on the same problems: the
SW of every solver column in each, mean +- s.e. over the problems both runs share.

    python experiments/gmm_compare.py gmm_posterior gmm_posterior_v2 --label "first wave" "this wave"

Used to show what changed a solver's result when its defaults changed (issue 11: native schedules,
paper-faithful updates, safe defaults). Writes experiments/results/<new>/compare.md.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def rows(name: str) -> dict[tuple, float]:
    """(d, d_y, problem, column) -> SW; column = method@steps (or floor / prior). The last row wins."""
    out = {}
    for line in (RESULTS / name / "results.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if r.get("sigma_y_fixed") is not None or r.get("sw") is None:
            continue
        col = r["method"] if r["method"] in ("floor", "prior") else f"{r['method']}@{r['steps']}"
        out[(r["dim"], r["dim_y"], r["problem"], col)] = r["sw"]
    return out


def mean_se(v: list[float]) -> str:
    if not v:
        return ""
    m = sum(v) / len(v)
    se = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v)) if len(v) > 1 else 0.0
    return f"{m:.2f} ± {se:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--label", nargs=2, default=["old", "new"])
    args = ap.parse_args(argv)
    old, new = rows(args.old), rows(args.new)
    cols_new = sorted({k[3] for k in new} - {"floor", "prior"},
                      key=lambda c: (c.split("@")[0], int(c.split("@")[1])))
    cells = sorted({k[:2] for k in new})
    lines = [(f"Sliced Wasserstein to exact posterior samples, {args.label[0]} (experiments/results/{args.old}) / "
             f"{args.label[1]} (experiments/results/{args.new}), mean ± s.e. over the problems present in both "
             f"runs for that cell and column (n). Same problems (make_case is seeded by d, d_y and the problem "
             f"number), same sample count. Rebuild: python experiments/gmm_compare.py {args.old} {args.new} "
             f"--label \"{args.label[0]}\" \"{args.label[1]}\""), "",
             "| d | d_y | n | floor | " + " | ".join(cols_new) + " |", "|---|---|---|---|" + "---|" * len(cols_new)]
    for d, dy in cells:
        probs = sorted({k[2] for k in new if k[:2] == (d, dy)})
        out, ns = [], set()
        for col in cols_new:
            shared = [p for p in probs if (d, dy, p, col) in old and (d, dy, p, col) in new]
            ns.add(len(shared))
            if not shared:
                out.append(f"– / {mean_se([new[(d, dy, p, col)] for p in probs if (d, dy, p, col) in new])}")
                continue
            out.append(f"{mean_se([old[(d, dy, p, col)] for p in shared])} / "
                       f"{mean_se([new[(d, dy, p, col)] for p in shared])}")
        floor = mean_se([new[(d, dy, p, "floor")] for p in probs if (d, dy, p, "floor") in new])
        lines.append(f"| {d} | {dy} | {'/'.join(map(str, sorted(ns)))} | {floor} | " + " | ".join(out) + " |")
    text = "\n".join(lines) + "\n"
    (RESULTS / args.new / "compare.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
