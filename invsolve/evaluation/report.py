"""Tables and figures of an evaluation, rebuilt from the rows only (never from a run's memory).

``table.md``: one block per grid, one line per (operator, prior, solver) cell, mean ± standard error
over the cell's samples per metric, and n. ``grid.png``: for the first ``figure_items`` items of each
(data, operator, prior): truth, the measurement mapped back to image space (A^+ y, clipped) and every
solver's reconstruction, from the tensors the rows point to (``DIR/images/*.pt``). Where the
pseudo-inverse only shows amplified noise (deblurring) the panel shows A^T y instead, and says so.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import torch
from torch import Tensor

from .plan import Cell, Plan
from .rows import canonical

HEADERS = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "rel_l2": "rel. L2 ↓", "lpips": "LPIPS ↓",
           "sw": "sliced W2 ↓"}
FORMATS = {"psnr": ".2f", "ssim": ".3f", "rel_l2": ".3f", "lpips": ".3f", "sw": ".3f"}


def measurement_image(op, y: Tensor, x_shape: tuple, data_range: tuple[float, float] = (0.0, 1.0)
                      ) -> tuple[Tensor | None, str]:
    """The measurement in image space for display, and its name for the panel title.

    Linear operators: A^+ y (deepinv's A_dagger) unless the pseudo-inverse blows the noise up beyond
    the data range (more than 5 % of the pixels more than 10 % of the range outside it, as in
    deblurring), then A^T y, mapped per image onto the data range when it too falls outside (CT: A^T
    scales by about ||A||^2, and clipped it shows as a blank panel). Other operators: y itself when it
    has the image's shape, else None.
    """
    from deepinv.physics import LinearPhysics

    with torch.no_grad():
        if isinstance(op, LinearPhysics):
            m = op.A_dagger(y)
            if tuple(m.shape[1:]) == tuple(x_shape) and _in_range(m, data_range):
                return m, "A⁺y"
            t = op.A_adjoint(y)
            if tuple(t.shape[1:]) != tuple(x_shape):
                return None, "A⁺y"
            if _in_range(t, data_range):
                return t, "Aᵀy"
            return _fit_range(t.real if t.is_complex() else t, data_range), "Aᵀy (rescaled)"
    return (y, "y") if tuple(y.shape[1:]) == tuple(x_shape) else (None, "y")


def _in_range(m: Tensor, data_range: tuple[float, float]) -> bool:
    """At most 5 % of the values more than 10 % of the range outside it."""
    lo, hi = data_range
    tol = 0.1 * (hi - lo)
    return float(((m < lo - tol) | (m > hi + tol)).float().mean()) <= 0.05


def _fit_range(t: Tensor, data_range: tuple[float, float]) -> Tensor:
    """Each image of the batch ``t`` mapped affinely onto ``data_range`` (its min to lo, max to hi)."""
    lo, hi = data_range
    t_lo = t.flatten(1).min(1).values.reshape(-1, *[1] * (t.ndim - 1))
    t_hi = t.flatten(1).max(1).values.reshape(-1, *[1] * (t.ndim - 1))
    return lo + (hi - lo) * (t - t_lo) / (t_hi - t_lo).clamp_min(1e-12)


def mean_se(values: list[float], fmt: str) -> str:
    """"mean ± standard error" (sample std / sqrt(n)); the mean alone for one value."""
    if not values:
        return ""
    n = len(values)
    m = sum(values) / n
    if n == 1:
        return f"{m:{fmt}}"
    se = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n)
    return f"{m:{fmt}} ± {se:{fmt}}"


def _cell_rows(cell: Cell, rows: dict[str, dict]) -> list[dict]:
    return [r for i in range(len(cell.data.ids)) if (r := rows.get(canonical(cell.key(i)))) is not None]


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def table(plan: Plan, rows: dict[str, dict]) -> str:
    """The markdown table of ``plan``'s cells from ``rows`` (indexed by canonical key)."""
    lines = [f"# {plan.config.name}", "",
             ("Mean ± standard error over the n samples of each cell (problems for the mixture); built "
              "from results.jsonl only. PSNR, SSIM and LPIPS on reconstructions clipped to the data "
              "range, relative L2 on the raw output; s = wall seconds per sample (batch time / batch "
              "size); NFE = batched network evaluations per solve."), ""]
    notes: list[str] = []
    by_grid: dict[int, list[Cell]] = defaultdict(list)
    for cell in plan.cells:
        by_grid[cell.grid].append(cell)
    for g, cells in by_grid.items():
        metrics = list(cells[0].metrics)
        lead = ["solver"] if cells[0].data.is_gmm else ["operator", "prior", "solver"]
        cols = lead + ["n"] + [HEADERS[m] for m in metrics] + ["s", "NFE"]
        lines += [f"## {g + 1}. {cells[0].data.label}", "", "| " + " | ".join(cols) + " |",
                  "|" + "---|" * len(cols)]
        for cell in cells:
            lines.append(_line(cell, _cell_rows(cell, rows), metrics, lead, notes))
        lines.append("")
    if notes:
        counts: dict[str, int] = defaultdict(int)
        for n in notes:
            counts[n] += 1
        lines += ["Notes:", ""] + [f"- {n}" + (f" ({c} cells)" if c > 1 else "") for n, c in counts.items()]
        lines.append("")
    return "\n".join(lines)


def _line(cell: Cell, found: list[dict], metrics: list[str], lead: list[str], notes: list[str]) -> str:
    labels = cell.labels()
    planned = len(cell.data.ids)
    ok = [r for r in found if not r.get("error")]
    failed = len(found) - len(ok)
    n = f"{len(found)}" if len(found) == planned else f"{len(found)} of {planned}"
    where = " / ".join(labels[k] for k in ("data", "operator", "prior", "solver"))
    if failed:
        n += f" ({failed} failed)"
        for msg in dict.fromkeys(r["error"] for r in found if r.get("error")):
            notes.append(f"{where}: {msg[:300]}")
    warned = [w for r in ok for w in r.get("warnings", [])]
    if warned:
        n_warned = sum(bool(r.get("warnings")) for r in ok)
        notes.append(f"{where}: {n_warned} row(s) with solver warnings, e.g. {warned[0][:200]}")
    vals = []
    for m in metrics:
        reasons = [r.get("unavailable", {}).get(m) for r in ok]
        if ok and all(reasons):
            vals.append("n/a")
            notes.append(f"{HEADERS[m].split()[0]} unavailable: {reasons[0]}")
            continue
        xs = [r["metrics"].get(m) for r in ok]
        vals.append(mean_se([x for x in xs if _finite(x)], FORMATS[m]) if ok else
                    ("failed" if failed else ""))
    secs = mean_se([r["seconds"] for r in ok if _finite(r.get("seconds"))], ".3g")
    nfes = sorted({r["nfe"] for r in ok if r.get("nfe") is not None})
    nfe = "" if not nfes else str(nfes[0]) if len(nfes) == 1 else f"{nfes[0]}-{nfes[-1]}"
    head = [labels[k].replace("|", "\\|") for k in lead]  # a label may hold "|" (mean |sinogram|)
    return "| " + " | ".join(head + [n] + vals + [secs, nfe]) + " |"


def _load(out: Path, rel: str | None) -> Tensor | None:
    if not rel or not (out / rel).is_file():
        return None
    return torch.load(out / rel, map_location="cpu", weights_only=True)


def _display(ax, img: Tensor | None, data_range: tuple[float, float], title: str | None = None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)
    if img is None:
        ax.text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=8, transform=ax.transAxes)
        return
    lo, hi = data_range
    img = img.double()
    if img.shape[0] == 3:
        ax.imshow(((img - lo) / (hi - lo)).clamp(0, 1).permute(1, 2, 0).numpy())
    elif img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=lo, vmax=hi)
    else:  # e.g. (real, imaginary) channels: show the magnitude
        ax.imshow(img.norm(dim=0).numpy(), cmap="gray", vmin=0, vmax=max(abs(lo), abs(hi)))


def grid_figure(plan: Plan, rows: dict[str, dict], out: Path, path: Path) -> bool:
    """Write the figure grid to ``path``; False (and no file) when no cell has images to show."""
    groups: dict[tuple, list[Cell]] = defaultdict(list)
    for cell in plan.cells:
        if not cell.data.is_gmm:
            groups[cell.group].append(cell)
    k = plan.config.figure_items
    panels = []  # (cells, item) per figure row
    for cells in groups.values():
        for i in range(min(k, len(cells[0].data.ids))):
            if any((r := rows.get(canonical(c.key(i)))) and r.get("images") for c in cells):
                panels.append((cells, i))
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = 2 + max(len(cells) for cells, _ in panels)
    fig, axes = plt.subplots(len(panels), ncols, figsize=(1.7 * ncols, 1.9 * len(panels)), squeeze=False)
    for r, (cells, i) in enumerate(panels):
        found = [rows.get(canonical(c.key(i))) for c in cells]
        images = next(row["images"] for row in found if row and row.get("images"))
        rng = cells[0].data.data_range
        _display(axes[r, 0], _load(out, images.get("truth")), rng, "truth")
        meas, kind = _load(out, images.get("measurement")), images.get("measurement_kind", "A⁺y")
        if kind == "Aᵀy" and meas is not None and not _in_range(meas, rng):
            # rows written before measurement_image rescaled an out-of-range A^T y (CT)
            meas, kind = _fit_range(meas[None], rng)[0], "Aᵀy (rescaled)"
        _display(axes[r, 1], meas, rng, f"{kind} (clipped)" if "rescaled" not in kind else kind)
        labels = cells[0].labels()
        axes[r, 0].set_ylabel(f"{labels['operator']}\n{labels['prior']}\nitem {i}", fontsize=6)
        for j, (cell, row) in enumerate(zip(cells, found)):
            title = cell.labels()["solver"]
            img = None
            if row and row.get("error"):
                title += "\nfailed"
            elif row:
                img = _load(out, (row.get("images") or {}).get("x_hat"))
                psnr = row["metrics"].get("psnr")
                if _finite(psnr):
                    title += f"\n{psnr:.2f} dB"
            _display(axes[r, 2 + j], img, rng, title)
        for j in range(2 + len(cells), ncols):
            axes[r, j].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def write_reports(plan: Plan, rows: dict[str, dict], out: Path) -> None:
    """``out/table.md`` and ``out/grid.png`` from the rows (indexed by canonical key)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table(plan, rows))
    grid_figure(plan, rows, out, out / "grid.png")
