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

Your own data (``user_data``, ``invsolve train --data PATH``):

- a folder of images (PNG, JPEG, TIFF, BMP; grey or RGB, RGBA -> RGB; DICOM with pydicom), searched
  recursively, read into [0, 1] (``read_image``, ``read_dicom``);
- a tensor file (.npy, .npz, .pt) of shape (N, C, H, W) or (N, H, W), in [0, 1] or in the ``units`` the
  caller states (``tensor_file``).

Whole files (or tensor items) are split into training and validation sets (``split_items``).

Images are float tensors (C, H, W) in [0, 1]. ``PatchSampler`` draws random crops (with flips and
90-degree rotations) from a list of images using an explicit ``torch.Generator``, so training is
reproducible and resumable from the generator's state.
"""

from __future__ import annotations

import hashlib
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
        images.append(torch.from_numpy(np.array(im[..., :3])).permute(2, 0, 1).float() / 255)
        names.append(name)
    return tuple(images), tuple(names)


@lru_cache(maxsize=2)
def _phantoms(n: int, size: int, seed: int, supersample: int = 1) -> Tensor:
    return ellipse_phantoms(n, size, seed, supersample)


def ellipse_phantoms(n: int, size: int = 128, seed: int = 0, supersample: int = 1) -> Tensor:
    """``n`` random ellipse phantoms (n, 1, size, size) in [0, 1], seeded.

    Each is a head-like phantom after Shepp & Logan (1974): a skull ellipse of value 1, a brain of
    value ~0.2 inside, and 3-10 random inner ellipses adding +-0.05..0.35 (clipped to [0, 1]).
    ``supersample`` > 1 draws each phantom on a grid that many times finer and averages blocks of
    pixels, so that edges carry partial-volume values as in a resized or scanned phantom
    (``shepp_logan()`` is one); 1 gives hard edges (the shipped phantom-ct prior was trained on those).
    The same seed draws the same ellipses at every ``supersample``.
    """
    if supersample < 1:
        raise ValueError(f"supersample must be a positive integer, got {supersample}")
    rng = np.random.default_rng(seed)
    fine = size * supersample
    # pixel centres of the fine grid that block-average onto the coarse grid's pixels
    half = 1.0 / (size - 1) * (supersample - 1) / supersample
    axis = np.linspace(-1 - half, 1 + half, fine)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
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
        img = np.clip(img, 0, 1)
        out[i] = img.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
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

    def equal_groups(self, k: int) -> None:
        """Draw k equal-size consecutive groups of the images (one per crop scale, as ``rescaled``
        orders them) equally often, each image within its group by its crop positions. Weighting every
        position alike instead draws a half-size image a quarter as often as a full-size one, and
        at crop 64 a 64 x 64 phantom (one position) once per 4 225 draws of a 128 x 128 one."""
        n = len(self.images)
        if k < 1 or n % k:
            raise ValueError(f"{n} images do not split into {k} equal groups")
        w = self.weights.reshape(k, n // k)
        self.weights = (w / w.sum(1, keepdim=True) / k).reshape(n)

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

PHANTOM_SUPERSAMPLE = 4
"""Edge supersampling of the built-in phantom-ct set (see ``ellipse_phantoms``); the shipped
phantom-ct prior predates it and was trained on hard edges (``supersample=1``)."""

DARCY_UNITS = (3.0, 12.0)
"""(a_low, a_high) of the ``darcy`` set: the prior's units."""


def darcy_fields(n: int, split: str = "train", size: int = 64) -> Tensor:
    """(n, 1, size, size) permeabilities in [3, 12]: ``split`` "train" is seed 0, "test" seed 1."""
    from invsolve.data import darcy_permeability

    seed = {"train": 0, "test": 1}[split]
    lo, hi = DARCY_UNITS
    return darcy_permeability(n, size, seed, a_low=lo, a_high=hi)[:, None].float()


def training_data(name: str, crop: int, seed: int = 0, scales: tuple[float, ...] = (1.0,), *,
                  val_fraction: float = 0.1, units: tuple[float, float] | None = None,
                  dicom_window: tuple[float, float] | None = None) -> tuple[PatchSampler, dict]:
    """The patch sampler of a training set and a description (data set, split) for prior.json.

    ``name`` is a built-in set (``DATASETS``) or the path of your own data (see ``user_data``, which
    also takes ``val_fraction``, ``units`` and ``dicom_window``; the built-in sets keep their own
    splits and units). ``scales``: the photos of natural-rgb are also cropped at these
    magnifications (see ``rescaled``).
    """
    if name not in DATASETS:
        sampler, info, _ = user_data(name, crop, seed, val_fraction, units, dicom_window, scales)
        return sampler, info
    if units is not None or dicom_window is not None:
        raise ValueError(f"the built-in set {name!r} has fixed units; units and dicom_window apply "
                         "to your own data (a tensor file, a folder with DICOM files)")
    if name == "natural-rgb":
        images, names = natural_rgb_images("train")
        _, test = natural_rgb_images("test")
        images = rescaled(images, tuple(scales))
        info = {"dataset": "natural-rgb: photos bundled by scikit-image, scikit-learn and matplotlib",
                "split": {"train": names, "test": test}}
    elif name == "phantom-ct":
        n, size, ss = 1000, 128, PHANTOM_SUPERSAMPLE
        images = rescaled(list(_phantoms(n, size, seed, ss)), tuple(scales))
        info = {"dataset": f"phantom-ct: {n} random ellipse phantoms {size}x{size}, seed {seed}, "
                           f"edges supersampled {ss}x",
                "split": {"train": f"ellipse_phantoms(n={n}, size={size}, seed={seed}, "
                                   f"supersample={ss})",
                          "test": "skimage.data.shepp_logan_phantom; pydicom CT_small.dcm (ct_slice)"}}
    elif name == "darcy":
        if tuple(scales) != (1.0,):
            raise ValueError("the darcy set is used at its own resolution: drop --scales")
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
    if name != "darcy":
        info["scales"] = list(scales)
    return PatchSampler(images, crop), info


def validation_images(name: str) -> list[Tensor]:
    """Held-out images of a built-in set, in its sampler's units ([0, 1]), for validation losses.

    natural-rgb: its test photos (chelsea); phantom-ct: ``shepp_logan()`` (128 x 128); darcy: 16 test
    fields (seed 1), mapped to [0, 1] as in training.
    """
    if name == "natural-rgb":
        return natural_rgb_images("test")[0]
    if name == "phantom-ct":
        return [shepp_logan()]
    if name == "darcy":
        lo, hi = DARCY_UNITS
        return list((darcy_fields(16, "test") - lo) / (hi - lo))
    raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")


def training_set(name: str, crop: int, seed: int = 0, scales: tuple[float, ...] = (1.0,), *,
                 val_fraction: float = 0.1, units: tuple[float, float] | None = None,
                 dicom_window: tuple[float, float] | None = None
                 ) -> tuple[PatchSampler, dict, list[Tensor]]:
    """``training_data`` plus the validation images ((C, H, W), the sampler's units), read once.

    Built-in sets: ``validation_images(name)``; your own data: its held-out split.
    """
    if name in DATASETS:
        sampler, info = training_data(name, crop, seed, scales, units=units, dicom_window=dicom_window)
        return sampler, info, validation_images(name)
    return user_data(name, crop, seed, val_fraction, units, dicom_window, scales)


# --- your own data: a folder of images or a tensor file -------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
"""Image files a data folder may hold (read by scikit-image: imageio / Pillow, tifffile)."""
DICOM_SUFFIXES = (".dcm", ".dicom")
"""DICOM files a data folder may hold (read by pydicom, when it is installed)."""
TENSOR_SUFFIXES = (".npy", ".npz", ".pt", ".pth")
"""Tensor files ``tensor_file`` reads."""


def _check_unit_range(x: np.ndarray | Tensor, what: str, fix: str, lo: float = 0.0, hi: float = 1.0
                      ) -> None:
    x = torch.as_tensor(x)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} holds NaN or infinite values; {fix}")
    a, b = float(x.min()), float(x.max())
    tol = 1e-6 * max(1.0, abs(lo), abs(hi))
    if a < lo - tol or b > hi + tol:
        raise ValueError(f"{what} spans [{a:.4g}, {b:.4g}], outside [{lo:g}, {hi:g}]; {fix}")


def read_image(path: str | Path) -> Tensor:
    """One image file as a (C, H, W) float32 tensor in [0, 1], C = 1 (grey) or 3 (RGB).

    Read with ``skimage.io.imread``. Integer pixels are divided by their type's maximum (255 for
    8-bit, 65535 for 16-bit: ``skimage.util.img_as_float``); float pixels (TIFF) must already lie in
    [0, 1]. An alpha channel is dropped (RGBA -> RGB, grey + alpha -> grey); palette images are RGB.
    Raises ValueError for other shapes (multi-page TIFF stacks) and for values outside [0, 1].
    """
    import skimage.io
    from skimage.util import img_as_float

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. low-contrast or EXIF warnings of the readers
        arr = np.asarray(skimage.io.imread(str(path)))
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):
        arr = arr[..., :-1]  # drop alpha
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"{path.name} has shape {arr.shape}, not a grey or RGB image (a multi-page "
                         "stack?); save one 2-D image per file or use a tensor file")
    dtype = arr.dtype
    arr = arr.astype(np.float32) if arr.dtype == bool else img_as_float(arr)
    _check_unit_range(arr, f"{path.name} ({dtype} pixels)",
                      "save it as unsigned 8/16-bit or as floats in [0, 1], or put the data in a "
                      "tensor file and pass --units LO HI")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().clamp(0, 1)


def read_dicom(path: str | Path, window: tuple[float, float] | None = None) -> list[Tensor]:
    """The frames of one DICOM file, each a (C, H, W) float32 tensor in [0, 1] (C = 1, or 3 for RGB).

    Grey values go through the modality LUT (RescaleSlope / RescaleIntercept: Hounsfield units for
    CT) and are then mapped to [0, 1] by ``window`` = (lo, hi) in those units, (v - lo) / (hi - lo)
    clipped (e.g. (-1000, 1000) HU, the mapping of ``ct_slice``), or, without a window, by the file's
    own minimum and maximum over all its frames. Needs pydicom.
    """
    try:
        import pydicom
    except ImportError as e:
        raise ImportError(f"{Path(path).name} is a DICOM file; reading it needs pydicom: "
                          "pip install pydicom") from e
    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut

    ds = pydicom.dcmread(str(path))
    arr = ds.pixel_array
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if spp == 1:
        arr = apply_modality_lut(arr, ds)
    arr = np.asarray(arr, dtype=np.float64)
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
        if not hi > lo:
            raise ValueError(f"the DICOM window must be (lo, hi) with hi > lo, got {window}")
        arr = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    else:
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    frames = arr.reshape(-1, *arr.shape[-3:]).transpose(0, 3, 1, 2) if spp > 1 else \
        arr.reshape(-1, 1, *arr.shape[-2:])
    return [torch.from_numpy(np.ascontiguousarray(f)).float() for f in frames]


def image_folder(folder: str | Path, dicom_window: tuple[float, float] | None = None
                 ) -> tuple[list[list[Tensor]], list[str]]:
    """All images under ``folder``: per file its images ((C, H, W) in [0, 1]; DICOM files may hold
    several frames) and the files' paths relative to ``folder``.

    Files are found recursively and sorted by relative path; hidden files and folders (names that
    start with ".") and files of other types are skipped. Raises ValueError, naming the files and
    the fix, for a folder with no image, unreadable files and mixed channel counts.
    """
    folder = Path(folder)
    files = sorted((f for f in folder.rglob("*") if f.is_file()
                    and not any(part.startswith(".") for part in f.relative_to(folder).parts)),
                   key=lambda f: f.relative_to(folder).as_posix())
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES]
    if not images:
        seen = ", ".join(f.name for f in files[:3]) or "nothing"
        raise ValueError(f"no image in the folder {folder} (found {seen}); --data takes a folder of "
                         f"{'/'.join(s[1:] for s in IMAGE_SUFFIXES + DICOM_SUFFIXES)} files, a tensor "
                         f"file ({'/'.join(TENSOR_SUFFIXES)}) or one of {DATASETS}")
    dicom = [f for f in images if f.suffix.lower() in DICOM_SUFFIXES]
    if dicom:
        try:
            import pydicom  # noqa: F401
        except ImportError as e:
            raise ImportError(f"{folder} holds {len(dicom)} DICOM file(s) (e.g. {dicom[0].name}); "
                              "reading them needs pydicom: pip install pydicom") from e
    items, names, bad = [], [], []
    for f in images:
        name = f.relative_to(folder).as_posix()
        try:
            is_dicom = f.suffix.lower() in DICOM_SUFFIXES
            ims = read_dicom(f, dicom_window) if is_dicom else [read_image(f)]
        except Exception as e:  # noqa: BLE001 -- every unreadable file is reported together below
            bad.append(f"{name} ({type(e).__name__}: {e})")
            continue
        items.append(ims)
        names.append(name)
    if bad:
        raise ValueError(f"{len(bad)} file(s) in {folder} could not be read as images: "
                         f"{'; '.join(bad[:3])}{'; ...' if len(bad) > 3 else ''}. Remove them or "
                         "re-save them (e.g. as 8-bit PNG)")
    by_channels: dict[int, list[str]] = {}
    for name, ims in zip(names, items):
        by_channels.setdefault(ims[0].shape[0], []).append(name)
    if len(by_channels) > 1:
        groups = sorted(by_channels.items(), key=lambda kv: -len(kv[1]))
        desc = "; ".join(f"{len(v)} with {c} channel(s), e.g. {', '.join(v[:2])}" for c, v in groups)
        raise ValueError(f"the images in {folder} have different channel counts: {desc}. Convert them "
                         "to one mode, e.g. all RGB (PIL: Image.open(f).convert('RGB')) or all grey "
                         "(.convert('L'))")
    return items, names


def tensor_file(path: str | Path, units: tuple[float, float] | None = None) -> Tensor:
    """The items of a tensor file as an (N, C, H, W) float32 tensor in [0, 1].

    ``path``: an .npy file, an .npz or .pt file holding one array (or ``FILE:KEY`` to pick one of
    several, e.g. ``darcy.pt:a`` from ``invsolve data darcy``), of shape (N, C, H, W) or (N, H, W)
    (-> C = 1). Values are taken to lie in ``units`` = (lo, hi) (default (0, 1)) and are mapped to
    [0, 1] by (x - lo) / (hi - lo); values outside ``units`` raise ValueError.
    """
    path, key = _split_key(Path(path))
    try:
        arrays = _read_arrays(path)
    except Exception as e:  # any reader error calls for the same fix
        raise ValueError(f"could not read {path.name} as a tensor file ({type(e).__name__}: {e}); "
                         "write it with np.save(path, array) or torch.save(tensor, path)") from e
    if key is None and len(arrays) == 1:
        x = next(iter(arrays.values()))
    elif key is not None and key in arrays:
        x = arrays[key]
    else:
        raise ValueError(f"{path.name} holds the arrays {sorted(arrays)}; pick one with "
                         f"--data {path}:KEY (e.g. {path}:{next(iter(arrays), 'x')})")
    x = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"{path.name} has shape {tuple(x.shape)}; a tensor file must hold N >= 1 "
                         "items of shape (N, C, H, W) or (N, H, W) (a single image: add a leading "
                         "axis, x[None])")
    if x.shape[1] > 4 and x.shape[-1] <= 4:
        warnings.warn(f"{path.name} has shape {tuple(x.shape)}: {x.shape[1]} channels of "
                      f"{x.shape[2]} x {x.shape[3]}; if it is channels-last (N, H, W, C), save "
                      "x.permute(0, 3, 1, 2) instead", stacklevel=2)
    lo, hi = (0.0, 1.0) if units is None else (float(units[0]), float(units[1]))
    if not hi > lo:
        raise ValueError(f"units must be (lo, hi) with hi > lo, got {units}")
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    _check_unit_range(x, f"{path.name}", "pass its range as --units LO HI (TrainConfig.units); "
                      "the prior then acts in those units", lo, hi)
    return ((x - lo) / (hi - lo)).clamp(0, 1).float()


def _read_arrays(path: Path) -> dict:
    """The arrays in a tensor file by name ("" for a file that holds one array)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return {"": np.load(path, allow_pickle=False)}
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if k != "__params__"}
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("data"), dict):
        obj = obj["data"]  # an ``invsolve data`` cache: {"params": ..., "data": {name: tensor}}
    arrays = dict(obj) if isinstance(obj, dict) else {"": obj}
    return {k: v for k, v in arrays.items() if isinstance(v, (Tensor, np.ndarray))}


def _split_key(path: Path) -> tuple[Path, str | None]:
    """``FILE:KEY`` -> (FILE, KEY) when FILE is a tensor file that exists; else (path, None)."""
    if not path.exists() and ":" in path.name:
        name, key = path.name.rsplit(":", 1)
        if (path.parent / name).exists():
            return path.parent / name, key
    return path, None


def is_tensor_file(name: str | Path) -> bool:
    """Whether ``name`` (possibly ``FILE:KEY``) names a tensor file by its suffix."""
    return _split_key(Path(name))[0].suffix.lower() in TENSOR_SUFFIXES


def split_items(n: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """Sorted (train, validation) indices of ``n`` items: round(n val_fraction) held out, at least
    one when n >= 2 and val_fraction > 0, never all; a permutation drawn from its own generator
    seeded with ``seed``, so the split depends on (n, val_fraction, seed) only."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    n_val = 0 if n < 2 or val_fraction == 0 else min(n - 1, max(1, round(n * val_fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def _digest(names: list, images: list[Tensor]) -> str:
    h = hashlib.sha1()
    for name, im in zip(names, images):
        h.update(f"{name}|{tuple(im.shape)}|".encode())
        h.update(im.contiguous().numpy().tobytes())
    return h.hexdigest()


def user_data(path: str, crop: int, seed: int = 0, val_fraction: float = 0.1,
              units: tuple[float, float] | None = None,
              dicom_window: tuple[float, float] | None = None, scales: tuple[float, ...] = (1.0,)
              ) -> tuple[PatchSampler, dict, list[Tensor]]:
    """Your own training set: (patch sampler of the training split, prior.json description,
    validation images), every image (C, H, W) in [0, 1], all held in memory (float32).

    ``path``: a folder of images (``image_folder``; ``dicom_window`` maps DICOM values, see
    ``read_dicom``) or a tensor file (``tensor_file``; ``units`` = (lo, hi) of its values, recorded
    so that the trained prior acts in them). Whole files (tensor items) are held out for validation
    by ``split_items(n, val_fraction, seed)``; the description records the split by file name
    (tensor index), the units and a SHA-1 of the data (a resumed run checks it). ``scales``: the
    training images are also cropped at these magnifications (``rescaled``); validation stays at 1.
    """
    p = Path(path)
    if not p.exists() and not (is_tensor_file(p) and _split_key(p)[0].exists()):
        raise ValueError(f"--data {path!r} is neither a built-in set {DATASETS} nor an existing "
                         "folder of images or tensor file (.npy, .npz, .pt); check the path")
    if is_tensor_file(p):
        if dicom_window is not None:
            raise ValueError("dicom_window applies to folders with DICOM files, not tensor files")
        x = tensor_file(p, units)
        items, names = [[im] for im in x], list(range(len(x)))
        kind = f"tensor file {path}: {len(x)} items {tuple(x.shape[1:])}"
    elif p.is_dir():
        if units is not None:
            raise ValueError("--units applies to tensor files; images are read into [0, 1] (DICOM: "
                             "use dicom_window / --dicom-window to map its values)")
        items, names = image_folder(p, dicom_window)
        kind = f"folder {path}: {len(items)} image files, {items[0][0].shape[0]} channel(s)"
        if dicom_window is not None:
            kind += f", DICOM window {list(dicom_window)}"
    else:
        raise ValueError(f"--data {path!r} is a file but not a tensor file ({', '.join(TENSOR_SUFFIXES)}); "
                         "put images in a folder and pass the folder")
    train_idx, val_idx = split_items(len(items), val_fraction, seed)
    label = [f"item {n}" if isinstance(n, int) else n for n in names]
    val_images = [im for i in val_idx for im in items[i]]
    small = [f"{label[i]} ({im.shape[-2]} x {im.shape[-1]})" for i in val_idx for im in items[i]
             if min(im.shape[-2:]) < crop]
    train = [(label[i], im) for i in train_idx for im in items[i]]
    train_images = []
    for s in scales:
        for (lab, im), r in zip(train, rescaled([im for _, im in train], (s,))):
            train_images.append(r)
            if min(r.shape[-2:]) < crop:
                small.append(f"{lab}{'' if s == 1 else f' at scale {s:g}'} ({r.shape[-2]} x {r.shape[-1]})")
    if small:
        raise ValueError(f"{len(small)} image(s) are smaller than the {crop} x {crop} crop: "
                         f"{', '.join(small[:3])}{', ...' if len(small) > 3 else ''}; use a smaller "
                         "--crop, larger --scales or remove them")
    info = {"dataset": kind,
            "split": {"train": [names[i] for i in train_idx], "val": [names[i] for i in val_idx]},
            "val_fraction": val_fraction,
            "units": [0.0, 1.0] if units is None else [float(units[0]), float(units[1])],
            "data_sha1": _digest(names, [im for ims in items for im in ims]),
            **({"scales": list(scales)} if tuple(scales) != (1.0,) else {})}
    return PatchSampler(train_images, crop), info, val_images
