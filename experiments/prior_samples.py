"""Unconditional samples of the shipped priors (DDIM, Song et al. 2021, arXiv 2010.02502).

The priors are fully convolutional (natural-rgb was trained on 32 x 32 crops, phantom-ct on 64 x 64
crops of 128 x 128 phantoms, darcy on whole 64 x 64 fields); samples are drawn at
``--size`` (default 64; phantom-ct's grid is drawn at 128, its phantoms' size) with the ``ddim``
solver (deterministic, ``--steps`` steps, y ignored).
Writes experiments/results/prior_samples/<name>.png (a 4 x 4 grid).
Run: python experiments/prior_samples.py [--weights natural-rgb=DIR ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import deepinv as dinv
import numpy as np
import torch
from skimage.io import imsave

import invsolve
from invsolve import priors
from invsolve.priors.unet import load_prior

OUT = Path(__file__).parent / "results" / "prior_samples"


def grid(x: torch.Tensor, nrow: int = 4, pad: int = 2) -> np.ndarray:
    """(B, C, H, W) in [0, 1] -> (rows*H, cols*W, C) uint8 with white padding."""
    B, C, H, W = x.shape
    rows = (B + nrow - 1) // nrow
    canvas = np.ones((rows * (H + pad) + pad, nrow * (W + pad) + pad, C))
    for i, im in enumerate(x.clamp(0, 1).numpy()):
        r, c = divmod(i, nrow)
        canvas[pad + r * (H + pad):pad + r * (H + pad) + H, pad + c * (W + pad):pad + c * (W + pad) + W] = \
            im.transpose(1, 2, 0)
    out = (canvas * 255).round().astype(np.uint8)
    return out[..., 0] if C == 1 else out


def sample(prior: priors.Prior, channels: int, n: int, size: int, steps: int, seed: int = 0) -> torch.Tensor:
    op = dinv.physics.Denoising(dinv.physics.GaussianNoise(sigma=0.1))
    problem = invsolve.Problem(op, torch.zeros(n, channels, size, size))  # y is ignored by ddim
    return invsolve.solve(problem, prior, "ddim", steps=steps, seed=seed).x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", nargs="*", default=[], help="NAME=DIR: sample a run folder instead")
    p.add_argument("--priors", nargs="*", default=["natural-rgb", "phantom-ct", "darcy"])
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    a = p.parse_args()
    torch.set_num_threads(1)
    override = dict(w.split("=", 1) for w in a.weights)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in a.priors:
        prior = load_prior(override[name]) if name in override else priors.load(name)
        channels = prior.info["architecture"]["kwargs"]["in_channels"]
        x = sample(prior, channels, a.n, a.size, a.steps)
        lo, hi = prior.info.get("units", (0.0, 1.0))  # shown in [0, 1]: (x - lo) / (hi - lo)
        imsave(OUT / f"{name}.png", grid((x - lo) / (hi - lo)), check_contrast=False)
        print(f"{name}: {a.n} samples {a.size}x{a.size}, mean {x.mean():.3f} std {x.std():.3f} "
              f"-> {OUT / (name + '.png')}")


if __name__ == "__main__":
    main()
