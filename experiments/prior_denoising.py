"""Shipped priors as denoisers on held-out data, against classical denoisers.

For each shipped prior, the held-out image(s) of its split are corrupted with Gaussian noise at
sigma in {0.05, 0.1, 0.2, 0.4} (images in [0, 1], seeded) and denoised by
- the prior: one call of ``prior.denoise(y, sigma)`` (the MMSE estimate it learned),
- total variation (Chambolle 2004, ``skimage.restoration.denoise_tv_chambolle``), weight chosen per
  image and sigma by an oracle over a grid (the best PSNR: an upper bound for TV),
- wavelet BayesShrink (Chang et al. 2000, ``denoise_wavelet``, sigma given),
- BM3D (Dabov et al. 2007) when the optional package ``bm3d`` is installed.
PSNR (dB, peak 1) after clipping to [0, 1].

Held-out data: natural-rgb: ``chelsea`` (never seen in training); phantom-ct: the Shepp-Logan
phantom at 128 x 128 and 256 x 256 and pydicom's real CT slice (trained only on random ellipse
phantoms); darcy: 4 permeability fields of the test split (seed 1). Darcy fields are scored in
[0, 1] units, (a - 3) / 9; the prior itself works in units of a, so y and sigma are scaled to them.

Writes experiments/results/prior_denoising/{results.jsonl,table.md}; rows of priors not evaluated in
this run are kept.
Run: python experiments/prior_denoising.py [--priors darcy] [--weights darcy=DIR ...]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from skimage.restoration import denoise_tv_chambolle, denoise_wavelet

from invsolve import priors
from invsolve.priors.datasets import ct_slice, darcy_fields, natural_rgb_images, shepp_logan
from invsolve.priors.unet import load_prior

OUT = Path(__file__).parent / "results" / "prior_denoising"
SIGMAS = (0.05, 0.1, 0.2, 0.4)
TV_WEIGHTS = (0.01, 0.02, 0.04, 0.06, 0.08, 0.12, 0.16, 0.24, 0.32, 0.48)


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.clip(x, 0, 1) - ref) ** 2)))


def held_out(name: str) -> list[tuple[str, torch.Tensor]]:
    """(name, image in [0, 1]) pairs of a prior's held-out data."""
    if name == "natural-rgb":
        images, names = natural_rgb_images("test")
        return list(zip(names, images))
    if name == "darcy":
        return [(f"darcy_test_{i}", (a - 3.0) / 9.0) for i, a in enumerate(darcy_fields(4, "test"))]
    return [(f"shepp_logan_{n}", shepp_logan(n)) for n in (128, 256)] + [("ct_small (pydicom)", ct_slice())]


def classical(noisy: np.ndarray, clean: np.ndarray, sigma: float) -> dict[str, float]:
    """PSNR of the classical denoisers; images (H, W, C) in [0, 1]."""
    ch = {"channel_axis": -1}
    out = {"tv (oracle weight)": max(psnr(denoise_tv_chambolle(noisy, weight=w, **ch), clean)
                                     for w in TV_WEIGHTS)}
    try:  # skimage's wavelet denoiser needs the optional PyWavelets
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["wavelet"] = psnr(denoise_wavelet(noisy, sigma=sigma, method="BayesShrink", mode="soft",
                                                  rescale_sigma=True, **ch), clean)
    except ImportError:
        pass
    try:
        import bm3d
    except ImportError:
        return out
    out["bm3d"] = psnr(np.stack([bm3d.bm3d(noisy[..., c], sigma) for c in range(noisy.shape[-1])], -1), clean)
    return out


def run(name: str, prior: priors.Prior, seed: int = 0) -> list[dict]:
    rows = []
    lo, hi = prior.info.get("units", (0.0, 1.0))  # the prior's units: u = lo + (hi - lo) x
    for img_name, x in held_out(name):
        clean = x.permute(1, 2, 0).numpy().astype(np.float64)
        for i, sigma in enumerate(SIGMAS):
            g = torch.Generator().manual_seed(seed + i)
            y = x + sigma * torch.randn(x.shape, generator=g)
            with torch.no_grad():
                d = (prior.denoise(lo + (hi - lo) * y[None], torch.tensor([(hi - lo) * sigma]))[0] - lo) / (hi - lo)
            noisy = y.permute(1, 2, 0).numpy().astype(np.float64)
            row = {"prior": name, "image": img_name, "sigma": sigma, "noisy": psnr(noisy, clean),
                   "prior_denoiser": psnr(d.permute(1, 2, 0).numpy(), clean), **classical(noisy, clean, sigma)}
            rows.append(row)
            print(json.dumps(row))
    return rows


def table(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r if k not in ("prior", "image", "sigma")))
    lines = ["| prior | held-out image | sigma | " + " | ".join(cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    for r in rows:
        best = max(r[c] for c in cols if c != "noisy" and c in r)
        cells = ["" if c not in r else f"**{r[c]:.2f}**" if r[c] == best else f"{r[c]:.2f}" for c in cols]
        lines.append(f"| {r['prior']} | {r['image']} | {r['sigma']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", nargs="*", default=[], help="NAME=DIR: evaluate a run folder instead")
    p.add_argument("--priors", nargs="*", default=["natural-rgb", "phantom-ct", "darcy"])
    a = p.parse_args()
    torch.set_num_threads(1)
    override = dict(w.split("=", 1) for w in a.weights)
    OUT.mkdir(parents=True, exist_ok=True)
    old = [json.loads(line) for line in (OUT / "results.jsonl").read_text().splitlines()] \
        if (OUT / "results.jsonl").exists() else []
    infos = {r["prior"]: r for r in old if "info" in r}
    rows = [r for r in old if r["prior"] not in a.priors and "info" not in r]
    for name in a.priors:
        prior = load_prior(override[name]) if name in override else priors.load(name)
        infos[name] = {"prior": name, "info": {k: prior.info.get(k) for k in ("steps", "split", "reproduce")}}
        rows += run(name, prior)
    order = ["natural-rgb", "phantom-ct", "darcy"]
    rows.sort(key=lambda r: order.index(r["prior"]) if r["prior"] in order else len(order))
    with open(OUT / "results.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows + [infos[k] for k in sorted(infos)])
    notes = "\n".join(f"- {k}: {v['info']['steps']} training steps; split {json.dumps(v['info']['split'])}"
                      for k, v in sorted(infos.items()))
    (OUT / "table.md").write_text(
        "# Shipped priors as denoisers on held-out data (PSNR dB, images in [0, 1])\n\n"
        "prior_denoiser = one call of prior.denoise(y, sigma); tv = Chambolle TV with the best weight "
        f"over {list(TV_WEIGHTS)} per image and sigma (oracle); wavelet = BayesShrink with known sigma. "
        "BM3D is included only when the optional `bm3d` package is installed. Best method in bold.\n\n"
        + table(rows) + "\n\n" + notes + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
