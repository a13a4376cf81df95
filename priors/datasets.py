"""Offline training and test data for the shipped priors (no download).

- ``natural-rgb``: the RGB photographs that installed packages bundle: scikit-image's, scikit-learn's
  two sample photos and matplotlib's portrait of Grace Hopper, split at the level of whole images
  (``NATURAL_SPLIT``). ``chelsea`` and ``cat`` are the same photo, so both sit in the test split.
  scikit-learn is needed for its two photos (``pip install -e '.[train]'``); a missing photo is an
  error, never silently skipped, so a split always means the same pixels.
- ``phantom-ct``: random ellipse phantoms in the style of Shepp & Logan (1974), values in [0, 1];
  the test images are ``skimage.data.shepp_logan_phantom`` and a real CT slice (``ct_slice``: the
  128 x 128 ``CT_small.dcm`` that pydicom bundles, needs ``pip install pydicom``).
- ``darcy``: Darcy permeabilities a in {3, 12} on 64 x 64 (thresholded Neumann GRF,
  ``invsolve.data.darcy_permeability``); train seed 0, test seed 1 (disjoint draws). The sampler sees
  (a - 3) / 9 in [0, 1]; prior.json's ``units`` [3, 12] makes the prior act on a itself.

Images are float tensors (C, H, W) in [0, 1]. ``PatchSampler`` draws random crops (with flips and
90-degree rotations) from a list of images using an explicit ``torch.Generator``, so training is
reproducible and resumable from the generator's state.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

NATURAL_SPLIT: dict[str, list[str]] = {
    "train": ["astronaut", "coffee", "rocket", "stereo_motorcycle:left", "stereo_motorcycle:right",
              "sklearn:flower.jpg", "sklearn:china.jpg", "matplotlib:grace_hopper.jpg"],
    "test": ["chelsea", "cat"],
}
"""Whole-image split of the natural photos (``sklearn:`` / ``matplotlib:`` name the package's file)."""


def _skimage_photo(name: str) -> np.ndarray:
    import skimage.data as sd

    if name.startswith("sklearn:"):
        try:
            from sklearn.datasets import load_sample_image
        except ImportError as err:
            raise ImportError(f"the natural-rgb photo {name} needs scikit-learn: pip install scikit-learn "
                              "(or pip install -e '.[train]')") from err
        return load_sample_image(name.split(":", 1)[1])
    if name.startswith("matplotlib:"):
        import matplotlib
        from PIL import Image

        path = Path(matplotlib.get_data_path()) / "sample_data" / name.split(":", 1)[1]
        return np.asarray(Image.open(path).convert("RGB"))
    if name.startswith("stereo_motorcycle:"):
        left, right, _ = sd.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(sd, name)()


def natural_rgb_images(split: str = "train") -> tuple[list[Tensor], list[str]]:
    """The photos of ``split`` ("train" or "test") as (3, H, W) tensors in [0, 1], and their names.

    The test split drops ``cat`` (a duplicate of ``chelsea``) so each photo counts once.
    """
    images, names = _natural(split)
    return [im.clone() for im in images], list(names)


@lru_cache(maxsize=4)
def _natural(split: str) -> tuple[tuple[Tensor, ...], tuple[str, ...]]:
    if split not in NATURAL_SPLIT:
        raise ValueError(f"split must be one of {sorted(NATURAL_SPLIT)}, got {split!r}")
    images, names = [], []
    for name in NATURAL_SPLIT[split]:
        if split == "test" and name == "cat":
            continue
        im = _skimage_photo(name)
        images.append(torch.from_numpy(np.ascontiguousarray(im[..., :3])).permute(2, 0, 1).float() / 255)
        names.append(name)
    return tuple(images), tuple(names)


@lru_cache(maxsize=2)
def _phantoms(n: int, size: int, seed: int) -> Tensor:
    return ellipse_phantoms(n, size, seed)


def ellipse_phantoms(n: int, size: int = 128, seed: int = 0) -> Tensor:
    """``n`` random ellipse phantoms (n, 1, size, size) in [0, 1], seeded.

    Each is a head-like phantom after Shepp & Logan (1974): a skull ellipse of value 1, a brain of
    value ~0.2 inside, and 3-10 random inner ellipses adding +-0.05..0.35 (clipped to [0, 1]).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    out = np.zeros((n, size, size), dtype=np.float32)

    def ell(cx: float, cy: float, a: float, b: float, th: float) -> np.ndarray:
        c, s = math.cos(th), math.sin(th)
        u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
        return (u / a) ** 2 + (v / b) ** 2 <= 1

    for i in range(n):
        a, b = rng.uniform(0.55, 0.75), rng.uniform(0.75, 0.95)
        cx, cy, th = rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08), rng.uniform(-0.3, 0.3)
        img = ell(cx, cy, a, b, th) * 1.0
        t = rng.uniform(0.03, 0.08)
        brain = ell(cx, cy, a - t, b - t * 1.2, th)
        img = img - brain * rng.uniform(0.7, 0.85)
        for _ in range(rng.integers(3, 11)):
            r = rng.uniform(0, 0.75) ** 0.5
            phi = rng.uniform(0, 2 * math.pi)
            ex, ey = cx + r * (a - t) * math.cos(phi) * 0.8, cy + r * (b - t) * math.sin(phi) * 0.8
            e = ell(ex, ey, rng.uniform(0.02, 0.3), rng.uniform(0.02, 0.3), rng.uniform(0, math.pi))
            img = img + (e & brain) * rng.choice([-1, 1]) * rng.uniform(0.05, 0.35)
        out[i] = np.clip(img, 0, 1)
    return torch.from_numpy(out)[:, None]


def shepp_logan(size: int = 128) -> Tensor:
    """``skimage.data.shepp_logan_phantom`` resized to (1, size, size), values in [0, 1]."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        im = resize(shepp_logan_phantom(), (size, size), order=1, anti_aliasing=True)
    return torch.from_numpy(np.clip(im, 0, 1)).float()[None]


def rescaled(images: list[Tensor], scales: tuple[float, ...]) -> list[Tensor]:
    """Each image at each scale (1 keeps it; < 1 downsamples with an anti-aliasing filter, kornia),
    so that a prior trained on crops sees the statistics of every magnification it will be used at."""
    from kornia.geometry.transform import rescale

    out = []
    for s in scales:
        if not 0 < s <= 1:
            raise ValueError(f"crop scales must lie in (0, 1], got {s}")
        for im in images:
            out.append(im if s == 1 else rescale(im[None], s, antialias=True)[0].clamp(0, 1))
    return out


class PatchSampler:
    """Random ``crop`` x ``crop`` patches from a list of (C, H, W) images, with flips and rotations.

    Images are picked with probability proportional to their number of valid crop positions.
    All randomness comes from the ``torch.Generator`` passed to ``sample``.
    """

    def __init__(self, images: list[Tensor], crop: int, augment: bool = True):
        small = [tuple(im.shape[-2:]) for im in images if min(im.shape[-2:]) < crop]
        if small:
            raise ValueError(f"{len(small)} image(s) are smaller than the {crop} x {crop} crop (e.g. "
                             f"{small[0]}); use a smaller --crop or drop them")
        self.images = [im for im in images if min(im.shape[-2:]) >= crop]
        if not self.images:
            raise ValueError(f"no image is at least {crop} x {crop}")
        self.crop, self.augment = crop, augment
        w = torch.tensor([(im.shape[-2] - crop + 1) * (im.shape[-1] - crop + 1) for im in self.images],
                         dtype=torch.float64)
        self.weights = w / w.sum()

    @property
    def channels(self) -> int:
        return self.images[0].shape[0]

    def sample(self, batch: int, gen: torch.Generator) -> Tensor:
        """(batch, C, crop, crop) float32 patches in the images' units."""
        idx = torch.multinomial(self.weights, batch, replacement=True, generator=gen)
        out = []
        for i in idx.tolist():
            im = self.images[i]
            H, W = im.shape[-2:]
            r = int(torch.randint(0, H - self.crop + 1, (1,), generator=gen))
            c = int(torch.randint(0, W - self.crop + 1, (1,), generator=gen))
            p = im[:, r:r + self.crop, c:c + self.crop]
            if self.augment:
                k, flip = torch.randint(0, 4, (2,), generator=gen).tolist()
                p = torch.rot90(p, k, (1, 2))
                p = p.flip(2) if flip % 2 else p
            out.append(p)
        return torch.stack(out)


def ct_slice() -> Tensor:
    """pydicom's bundled real CT slice ``CT_small.dcm`` as (1, 128, 128) float32 in [0, 1].

    Hounsfield units are mapped linearly in attenuation, (HU + 1000) / 2000 clipped to [0, 1], so
    air is 0, water 0.5 and dense bone 1 (the phantoms' range).
    """
    try:
        import pydicom
        from pydicom.data import get_testdata_file
    except ImportError as e:
        raise ImportError("ct_slice needs pydicom: pip install pydicom (or pip install -e '.[test]')") from e
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return torch.from_numpy(np.clip((hu + 1000.0) / 2000.0, 0.0, 1.0)).float()[None]


DATASETS = ("natural-rgb", "phantom-ct", "darcy")

DARCY_UNITS = (3.0, 12.0)
"""(a_low, a_high) of the ``darcy`` set: the prior's units."""


def darcy_fields(n: int, split: str = "train", size: int = 64) -> Tensor:
    """(n, 1, size, size) permeabilities in [3, 12]: ``split`` "train" is seed 0, "test" seed 1."""
    from invsolve.data import darcy_permeability

    seed = {"train": 0, "test": 1}[split]
    lo, hi = DARCY_UNITS
    return darcy_permeability(n, size, seed, a_low=lo, a_high=hi)[:, None].float()


def training_data(name: str, crop: int, seed: int = 0, scales: tuple[float, ...] = (1.0,)
                  ) -> tuple[PatchSampler, dict]:
    """The patch sampler of a named training set and a description (data set, split) for prior.json.

    ``scales``: the photos of natural-rgb are also cropped at these magnifications (see ``rescaled``).
    """
    if name == "natural-rgb":
        images, names = natural_rgb_images("train")
        _, test = natural_rgb_images("test")
        images = rescaled(images, tuple(scales))
        info = {"dataset": "natural-rgb: photos bundled by scikit-image, scikit-learn and matplotlib",
                "split": {"train": names, "test": test}, "scales": list(scales)}
    elif name == "phantom-ct":
        n, size = 1000, 128
        images = list(_phantoms(n, size, seed))
        info = {"dataset": f"phantom-ct: {n} random ellipse phantoms {size}x{size}, seed {seed}",
                "split": {"train": f"ellipse_phantoms(n={n}, size={size}, seed={seed})",
                          "test": "skimage.data.shepp_logan_phantom; pydicom CT_small.dcm (ct_slice)"}}
    elif name == "darcy":
        n, size = 2000, 64
        lo, hi = DARCY_UNITS
        images = list((darcy_fields(n, "train", size) - lo) / (hi - lo))
        info = {"dataset": f"darcy: {n} thresholded Neumann GRF permeabilities {size}x{size} "
                           "(alpha 2, tau 3, a in {3, 12})",
                "split": {"train": f"darcy_fields(n={n}, split='train') (seed 0)",
                          "test": "darcy_fields(n, split='test') (seed 1)"},
                "units": list(DARCY_UNITS)}
    else:
        raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")
    return PatchSampler(images, crop), info
