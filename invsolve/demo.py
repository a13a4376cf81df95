"""``invsolve demo``: two problems, both with priors shipped in the package (no download).

1. Exact check: the analytic 25-component Gaussian mixture, measured by a random 2 x 8 matrix. DPS
   samples the posterior and is compared with exact posterior samples (sliced Wasserstein) beside the
   floor and the prior; scatter plot ``<out>/demo.png``.
2. Image: the shipped ``natural-rgb`` prior restores a held-out photo (scikit-image's chelsea, never
   seen in training) from 70 % missing pixels with noise; DDRM, PiGDM and PnP-Flow against the zero-filled
   measurement and skimage's biharmonic inpainting, PSNR printed; figure ``<out>/demo_image.png``.
"""

from __future__ import annotations

from pathlib import Path

import torch

import invsolve
from invsolve.evaluation.gmm import make_case
from invsolve.evaluation.metrics import sliced_wasserstein


def run_demo(steps: int = 100, samples: int = 512, seed: int = 0, out: str | Path = "invsolve-demo",
             image: bool = True) -> int:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _gmm_demo(steps, samples, seed, out)
    if image:
        _image_demo(seed, out)
    return 0


def _gmm_demo(steps: int, samples: int, seed: int, out: Path) -> None:
    print("== 1. Gaussian mixture, exact posterior known ==")
    case = make_case(dim=8, dim_y=2, seed=seed)
    print(f"problem: {case.problem}")
    exact = case.posterior.sample(samples, seed=seed + 1)
    floor = sliced_wasserstein(case.posterior.sample(samples, seed=seed + 2), exact)
    prior_sw = sliced_wasserstein(case.prior.sample(samples, seed=seed + 3), exact)
    print(f"sliced Wasserstein to exact posterior samples ({samples} samples):")
    print(f"  floor (exact vs exact)    {floor:7.3f}")
    print(f"  prior (ignores y)         {prior_sw:7.3f}")
    results = {}
    for name in ("ddim", "dps"):
        res = invsolve.solve(case.problem.repeat(samples), case.prior, name, steps=steps, seed=seed + 7,
                             progress=True)
        results[name] = res.x
        sw = sliced_wasserstein(res.x, exact)
        print(f"  {name:<5} {steps:>4} steps        {sw:7.3f}   ({res.nfe} NFE, {res.seconds:.2f} s)")
    _plot(exact, case.prior.sample(samples, seed=seed + 3), results, out / "demo.png")
    print(f"figure: {out / 'demo.png'}")


def _image_demo(seed: int, out: Path, size: int = 64) -> None:
    from skimage.restoration import inpaint_biharmonic

    from invsolve import operators, priors
    from invsolve.evaluation.metrics import psnr
    from invsolve.priors.datasets import natural_rgb_images

    print("\n== 2. Inpainting a held-out photo with the shipped natural-rgb prior ==")
    images, names = natural_rgb_images("test")
    top, left = 150, 200  # a crop at full resolution, the scale the prior was trained at
    x = images[0][None, :, top:top + size, left:left + size]
    prior = priors.load("natural-rgb").eval()
    op = operators.build("inpaint_random", img_size=(3, size, size), missing=0.7, noise_sigma=0.02, seed=seed)
    problem = invsolve.Problem.simulate(op, x, seed=seed)
    mask = op.mask.expand_as(x)[0, 0].bool().numpy()
    observed = problem.y[0].permute(1, 2, 0).numpy()
    classical = torch.from_numpy(inpaint_biharmonic(observed, ~mask, channel_axis=-1)).permute(2, 0, 1)[None]
    recon = {"measurement (zero-filled)": problem.y, "biharmonic (skimage)": classical.float()}
    print(f"image: {names[0]} ({size}x{size} crop at ({top}, {left}), held out from training); 70% pixels missing, sigma_y 0.02")
    for label, x_hat in recon.items():
        print(f"  {label:<27} PSNR {psnr(x_hat.clamp(0, 1), x):6.2f} dB")
    # One posterior sample each (not the posterior mean, whose PSNR would be higher).
    for name, hp in (("ddrm", {"steps": 50}), ("pigdm", {"steps": 20}), ("pnp_flow", {"steps": 100})):
        res = invsolve.solve(problem, prior, name, seed=seed, progress=True, **hp)
        recon[f"{name} ({res.nfe} NFE)"] = res.x
        print(f"  {name + ' (' + str(res.nfe) + ' NFE)':<27} PSNR {psnr(res.x.clamp(0, 1), x):6.2f} dB"
              f"   ({res.seconds:.1f} s)")
    _plot_images({"truth": x, **recon}, out / "demo_image.png")
    print(f"figure: {out / 'demo_image.png'}")


def _plot_images(images: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(2.6 * len(images), 2.9))
    for ax, (title, im) in zip(axes, images.items()):
        ax.imshow(im[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy())
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot(exact: torch.Tensor, prior: torch.Tensor, results: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = {"prior": prior, "exact posterior": exact, **results}
    fig, axes = plt.subplots(1, len(sets), figsize=(3.2 * len(sets), 3.2), sharex=True, sharey=True)
    for ax, (title, pts) in zip(axes, sets.items()):
        ax.scatter(pts[:, 0].cpu(), pts[:, 1].cpu(), s=3, alpha=0.5)
        ax.set_title(title)
        ax.set_xlabel("x[0]")
    axes[0].set_ylabel("x[1]")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
