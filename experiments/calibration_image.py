"""Pixelwise posterior spread on a held-out photo: MCGdiff beside DPS and DDRM, with z-score coverage.

    python experiments/calibration_image.py              # 32 x 32 crop of chelsea, about 15 minutes
    python experiments/calibration_image.py --size 64 --samples 8

A crop of the held-out photo (``natural_rgb_images("test")``: chelsea, around the left eye, downsampled
2x) is inpainted with a centred box hole and Gaussian noise, with the shipped ``natural-rgb`` prior. Each
solver draws ``samples`` independent posterior samples (``problem.repeat``; MCGdiff with ``particles``
particles per sample). The figure shows the truth, the measurement, one sample, the pixelwise mean and
the pixelwise posterior std of each solver; the table scores the samples against x_true
(``invsolve.evaluation.calibration.pixel_coverage``: fraction of pixels inside the 50 % / 90 %
intervals, from z-scores and from the samples' quantiles, overall and in the hole) with PSNR of the
mean. Writes experiments/results/calibration/{image_std.png, image.md, image.pt}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import invsolve
from invsolve import operators, priors
from invsolve.evaluation.calibration import pixel_coverage
from invsolve.priors.datasets import natural_rgb_images

OUT = Path(__file__).resolve().parent / "results" / "calibration"


def crop(size: int) -> torch.Tensor:
    """(1, 3, size, size) crop of chelsea around the left eye, 2x box-downsampled, in [0, 1]."""
    images, names = natural_rgb_images("test")
    im = images[names.index("chelsea")]
    big = im[:, 122 - size: 122 + size, 152 - size: 152 + size][None]
    return torch.nn.functional.avg_pool2d(big, 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--box", type=int, default=None, help="hole size (default size / 2)")
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--particles", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50, help="mcgdiff and ddrm steps")
    ap.add_argument("--dps-steps", type=int, default=200)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    x = crop(args.size)
    box = args.box or args.size // 2
    op = operators.build("inpaint_box", img_size=(3, args.size, args.size), box=box, noise_sigma=args.noise)
    problem = invsolve.Problem.simulate(op, x, seed=0)
    prior = priors.load("natural-rgb")
    hole = (op.mask[0] == 0).expand(3, -1, -1) if op.mask.ndim == 4 else (op.mask == 0)
    runs = {  # (hyperparameters, preset): DPS with its official inpainting scale (zeta 0.5)
        "mcgdiff": ({"steps": args.steps, "particles": args.particles}, None),
        "dps": ({"steps": args.dps_steps}, "paper"),
        "ddrm": ({"steps": args.steps}, None),
    }
    results, lines = {}, []
    for name, (hp, preset) in runs.items():
        start = time.perf_counter()
        res = invsolve.solve(problem.repeat(args.samples), prior, name, seed=0, preset=preset, **hp)
        hp = {**(invsolve.solvers.get(name).preset_values(preset, op.task) if preset else {}), **hp}
        xs = res.x.clamp(0, 1)
        secs = time.perf_counter() - start
        mean = xs.mean(0)
        psnr = float(-10 * torch.log10(((mean - x[0]) ** 2).mean()))
        allpix = pixel_coverage(xs, x[0])
        inhole = pixel_coverage(xs[:, hole], x[0][hole])
        results[name] = {"samples": xs, "hp": hp, "seconds": secs}
        ess = ""
        if "ess" in res.info:
            ess = f"{float((res.info['ess'] / hp['particles']).mean(1).min()):.3f}"
        lines.append(f"| {name} | {hp} | {psnr:.2f} | {allpix['std_mean']:.3f} | {inhole['std_mean']:.3f} | "
                     f"{allpix['z50']:.2f} / {allpix['z90']:.2f} | {inhole['z50']:.2f} / {inhole['z90']:.2f} | "
                     f"{inhole['q50']:.2f} / {inhole['q90']:.2f} | {inhole['z_rms']:.2f} | {ess} | {secs:.0f} |")
        print(lines[-1], flush=True)
    torch.save({"x": x, "y": problem.y, "mask": op.mask, "results": results}, OUT / "image.pt")
    header = (f"Held-out chelsea crop {args.size}x{args.size} (2x downsampled), centred {box}x{box} box hole, "
              f"Gaussian noise sigma = {args.noise}, shipped natural-rgb prior; {args.samples} independent "
              "samples per solver. Coverage: fraction of pixels whose true value lies in the samples' "
              "50 % / 90 % interval (z: mean +- z_l std; q: central quantiles), over the whole image and "
              "in the hole; z_rms: root mean square z-score in the hole (1 = calibrated, > 1 "
              "overconfident); ESS: smallest per-step ESS fraction (mcgdiff). Command: python "
              f"experiments/calibration_image.py {' '.join(argv if argv is not None else sys.argv[1:])}\n\n"
              "| solver | hyperparameters | PSNR of mean | mean std (all) | mean std (hole) | z cov 50/90 "
              "(all) | z cov 50/90 (hole) | q cov 50/90 (hole) | z_rms (hole) | ESS | seconds |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|")
    (OUT / "image.md").write_text(header + "\n" + "\n".join(lines) + "\n")
    figure(x[0], problem.y[0], results, OUT / "image_std.png")
    return 0


def figure(x: torch.Tensor, y: torch.Tensor, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def show(ax, im, title, **kw):
        ax.imshow(im.permute(1, 2, 0).clamp(0, 1).numpy() if im.ndim == 3 else im.numpy(), **kw)
        ax.set_title(title, fontsize=9)
        ax.axis("off")

    names = list(results)
    stds = {n: results[n]["samples"].std(0).mean(0) for n in names}
    vmax = max(float(s.max()) for s in stds.values())
    fig, axes = plt.subplots(len(names), 5, figsize=(11, 2.3 * len(names)))
    for row, n in zip(axes, names):
        xs = results[n]["samples"]
        show(row[0], x, "truth")
        show(row[1], y, "measurement")
        show(row[2], xs[0], f"{n}: one sample")
        show(row[3], xs.mean(0), f"{n}: mean")
        im = row[4].imshow(stds[n].numpy(), cmap="magma", vmin=0, vmax=vmax)
        row[4].set_title(f"{n}: pixel std (RGB mean)", fontsize=9)
        row[4].axis("off")
        fig.colorbar(im, ax=row[4], fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
