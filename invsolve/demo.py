"""``invsolve demo``: two problems, both with priors shipped in the package (no download).

1. Exact check: the analytic 25-component Gaussian mixture, measured by a random 2 x 8 matrix. DPS
   samples the posterior and is compared with exact posterior samples (sliced Wasserstein) beside the
   floor and the prior; scatter plot ``<out>/demo.png``.
2. Images: the shipped ``natural-rgb`` prior on a held-out photo (scikit-image's chelsea, never seen
   in training) for SR x4, Gaussian deblurring, box and 70 % random inpainting (sigma_y 0.02), and the
   shipped ``phantom-ct`` prior on sparse-view CT of the Shepp-Logan phantom (64 x 64, 30 views); PnP-Flow
   (100 NFE, one sample) beside each task's classical baseline (bicubic, Tikhonov, biharmonic, TV,
   and FBP), PSNR printed; figure ``<out>/demo_image.png``, one row per task.
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


DEMO_TASKS = (
    # (title, operator, its keywords, baseline solver, its hyperparameters)
    ("SR x4", "sr4", {}, "bicubic", {}),
    ("Gaussian blur", "blur_gauss", {"kernel_size": 15, "std": 2.0}, "tikhonov", {"weight": 0.03}),
    ("box inpainting", "inpaint_box", {}, "biharmonic", {}),
    ("70 % random inpainting", "inpaint_random", {"missing": 0.7}, "biharmonic", {}),
)
"""The photo tasks of the image demo, each against its classical baseline. The Tikhonov weight is the
best on the validation crops at sigma_y 0.02 (experiments/image_restoration.py --noise 0.02)."""
CT_TV_WEIGHT = 1e-3
"""TV weight of the CT task: the best on validation ellipse phantoms (experiments/ct_sparse_view.py)."""
CT_SIZE = 64
"""The CT phantom's size: 64 x 64 keeps the demo to about a minute (each PnP-Flow step solves the CT
normal equations); experiments/ct_sparse_view.py runs the 128 x 128 Learned Primal-Dual setup."""


def _image_demo(seed: int, out: Path, size: int = 64, steps: int = 100) -> None:
    from invsolve import operators, priors
    from invsolve.evaluation.metrics import psnr
    from invsolve.priors.datasets import natural_rgb_images, shepp_logan

    print("\n== 2. Held-out images with the shipped priors, beside the classical baselines ==")
    images, names = natural_rgb_images("test")
    top, left = 150, 200  # a crop at full resolution, the scale the prior was trained at
    x = images[0][None, :, top:top + size, left:left + size]
    print(f"photo: {names[0]} ({size}x{size} crop at ({top}, {left}), held out from training), sigma_y 0.02; "
          f"CT: Shepp-Logan {CT_SIZE}x{CT_SIZE}, 30 views, noise 5 % of the mean |sinogram|")
    print(f"PnP-Flow, {steps} NFE, one posterior sample (the mean of several scores higher)")
    print(f"  {'task':<24} {'baseline':<22} {'PSNR':>6}   {'PnP-Flow':>8}   time")
    rows: list[tuple[str, dict[str, torch.Tensor]]] = []
    rgb = priors.load("natural-rgb").eval()
    for title, op_name, op_kw, base, base_hp in DEMO_TASKS:
        op = operators.build(op_name, img_size=(3, size, size), noise_sigma=0.02, **op_kw)
        rows.append((title, _demo_task(op, x, rgb, base, base_hp, steps, seed, title, psnr)))
    ct_x = shepp_logan(CT_SIZE)[None]
    ct_shape = (1, CT_SIZE, CT_SIZE)
    sigma = 0.05 * float(operators.build("ct_sparse", img_size=ct_shape, angles=30).A(ct_x).abs().mean())
    ct = operators.build("ct_sparse", img_size=ct_shape, angles=30, noise_sigma=sigma)
    panels = _demo_task(ct, ct_x, priors.load("phantom-ct").eval(), "tv", {"weight": CT_TV_WEIGHT}, steps,
                        seed, "sparse-view CT", psnr, picture="fbp", progress=True)  # ~1 min
    rows.append(("sparse-view CT", panels))
    _plot_rows(rows, out / "demo_image.png")
    print(f"figure: {out / 'demo_image.png'}")


def _demo_task(op, x, prior, base: str, base_hp: dict, steps: int, seed: int, title: str, psnr,
               picture: str | None = None, progress: bool = False) -> dict[str, torch.Tensor]:
    """Solve one demo task with its baseline and PnP-Flow; print the PSNR row; return the panels.
    ``picture``: a baseline whose output stands for the measurement (FBP for a sinogram); otherwise y
    itself (blur, inpainting) or y upsampled by pixel repetition (SR)."""
    problem = invsolve.Problem.simulate(op, x, seed=seed)
    if picture is not None:
        shown = invsolve.solve(problem, prior, picture).x
    elif problem.y.shape == x.shape:
        shown = problem.y
    else:
        shown = torch.nn.functional.interpolate(problem.y, size=x.shape[-2:], mode="nearest")
    b = invsolve.solve(problem, prior, base, **base_hp).x
    res = invsolve.solve(problem, prior, "pnp_flow", steps=steps, seed=seed, progress=progress)
    pb, pf = psnr(b.clamp(0, 1), x), psnr(res.x.clamp(0, 1), x)
    extra = f"   (FBP {psnr(shown.clamp(0, 1), x):.2f} dB)" if picture == "fbp" else ""
    base_label = base + (f" (weight {base_hp['weight']:g})" if "weight" in base_hp else "")
    print(f"  {title:<24} {base_label:<22} {pb:6.2f}   {pf:8.2f}   {res.seconds:4.1f} s{extra}")
    return {"truth": x, "FBP (Hann)" if picture == "fbp" else "measurement": shown,
            f"{base}: {pb:.2f} dB": b, f"PnP-Flow: {pf:.2f} dB": res.x}


def _plot_rows(rows: list[tuple[str, dict[str, torch.Tensor]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = max(len(p) for _, p in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.3 * ncol, 2.4 * len(rows)), squeeze=False)
    for r, (title, panels) in enumerate(rows):
        for c, (label, im) in enumerate(panels.items()):
            ax = axes[r, c]
            img = im[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(label, fontsize=8)
            ax.axis("off")
        axes[r, 0].set_title(f"{title}\ntruth", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
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
