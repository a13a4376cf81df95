"""Gallery of the PDE data: Darcy (a, u) pairs and a Navier-Stokes vorticity trajectory.

Writes experiments/results/pde/gallery.png. Data come from ``invsolve.data`` generators (seed 0), the
same code that ``invsolve data darcy|ns`` caches; nothing is downloaded.

    python experiments/pde_gallery.py [--size 64]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from invsolve.data import generate_darcy, generate_ns
from invsolve.operators.pde import NavierStokes

OUT = Path(__file__).parent / "results" / "pde"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--pairs", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)
    darcy = generate_darcy(args.pairs, args.size, seed=0, progress=False)
    ns = generate_ns(1, args.size, seed=0, t_final=1.0, snapshots=4, progress=False)
    y = NavierStokes(size=args.size, subsample=4).A(ns["w"][:, :1].double())  # observed data at T = 1

    cols = max(args.pairs, 6)
    fig, axes = plt.subplots(3, cols, figsize=(2.4 * cols, 7.6), constrained_layout=True)
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(args.pairs):
        ax = axes[0, i]
        ax.imshow(darcy["a"][i, 0], cmap="viridis", origin="lower", extent=(0, 1, 0, 1))
        ax.set_title(f"permeability a #{i} (3 / 12)", fontsize=8)
        im = axes[1, i].imshow(darcy["u"][i, 0], cmap="magma", origin="lower", extent=(0, 1, 0, 1))
        axes[1, i].set_title(f"pressure u #{i}, max {float(darcy['u'][i].max()):.4f}", fontsize=8)
        fig.colorbar(im, ax=axes[1, i], shrink=0.7)
    w = ns["w"][0]
    lim = float(w.abs().max())
    for j in range(w.shape[0]):
        ax = axes[2, j]
        ax.imshow(w[j], cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower",
                  extent=(0, 6.283, 0, 6.283))
        ax.set_title(f"vorticity t = {float(ns['t'][j]):.2f}", fontsize=8)
    ax = axes[2, w.shape[0]]
    ax.imshow(y[0, 0], cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower", extent=(0, 6.283, 0, 6.283))
    ax.set_title("observed: w(1) subsampled x4", fontsize=8)
    fig.suptitle(f"Darcy -div(a grad u) = 1 ({args.size}^2, FV harmonic) | Navier-Stokes Re=200, "
                 "forcing -4cos(4y)", fontsize=10)
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / "gallery.png", dpi=110)
    print(f"wrote {OUT / 'gallery.png'}")


if __name__ == "__main__":
    main()
