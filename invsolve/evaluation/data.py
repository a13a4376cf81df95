"""Data sets of the evaluation runner: items with stable ids, loaded offline.

Each item has an id that names its content (file name and content hash, crop position, generator
index), so a row's key stays valid when the data set grows (the first n items of a larger n are the
same items) and a changed file gives new keys instead of silently reusing old rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import (
    CTSlice,
    DarcyTest,
    EllipsePhantoms,
    Folder,
    GMMData,
    MRSlice,
    NaturalRGBTest,
    SheppLogan,
    TensorFile,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Dataset:
    """Loaded items of one data set.

    ids: one stable id per item. x: (N, C, H, W) float64 on the CPU (None for the mixture, whose
    problems are built per item). data_range: (lo, hi) of the values, the peak for PSNR and the
    display range. size_arg: the operator keyword that takes the data shape ("img_size" with (C, H, W)
    or "size" with H for the PDE operators); None for the mixture.
    """

    spec: object
    label: str
    ids: list[str]
    x: Tensor | None
    data_range: tuple[float, float]
    size_arg: str | None

    @property
    def is_gmm(self) -> bool:
        return isinstance(self.spec, GMMData)

    def shape_kwargs(self) -> dict:
        """The keyword giving an operator the data shape (JSON-friendly values)."""
        if self.size_arg == "img_size":
            return {"img_size": list(self.x.shape[1:])}
        if self.size_arg == "size":
            return {"size": int(self.x.shape[-1])}
        return {}


def _sha8(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:8]


def natural_cells(size: int) -> dict[str, list[tuple[str, int, int]]]:
    """The non-overlapping ``size`` x ``size`` crop positions (photo, top, left) of the held-out
    photos, split into "test" and "val".

    All grid cells are sorted by a hash of their position (a fixed order that needs no random
    generator); the last quarter of that order (at least one cell when there are two or more) is
    the validation split, taken from the end, and the rest is the test split, taken from the start.
    The test split's order is the order the data set had before splits existed, so old rows keep
    their keys.
    """
    from invsolve.priors.datasets import natural_rgb_images

    images, names = natural_rgb_images("test")
    cells = [(names[k], r * size, c * size) for k, im in enumerate(images)
             for r in range(im.shape[1] // size) for c in range(im.shape[2] // size)]
    cells.sort(key=lambda t: hashlib.sha256(f"{t[0]}/{t[1] // size}/{t[2] // size}".encode()).hexdigest())
    n_val = len(cells) // 4 if len(cells) >= 4 else min(1, len(cells) - 1)
    cut = len(cells) - n_val
    return {"test": cells[:cut], "val": cells[cut:][::-1]}


def _natural(spec: NaturalRGBTest) -> Dataset:
    from invsolve.priors.datasets import natural_rgb_images

    images, names = natural_rgb_images("test")
    s, split = spec.size, spec.split
    cells = natural_cells(s)[split]
    if spec.n > len(cells):
        raise ValueError(f"natural-rgb-test has only {len(cells)} non-overlapping {s} x {s} crops in its "
                         f"{split!r} split; ask for n <= {len(cells)} or a smaller size")
    cells = cells[:spec.n]
    index = {name: k for k, name in enumerate(names)}
    x = torch.stack([images[index[p]][:, r:r + s, c:c + s] for p, r, c in cells])
    prefix = "natural-rgb-test" if split == "test" else "natural-rgb-val"
    ids = [f"{prefix}/{p}/y{r}x{c}/{s}" for p, r, c in cells]
    label = f"natural-rgb-test {s}x{s}" + (" (val)" if split == "val" else "")
    return Dataset(spec, label, ids, x.double(), (0.0, 1.0), "img_size")


def natural_region(item_id: str) -> tuple[str, int, int, int] | None:
    """(photo, top, left, size) of a natural-rgb crop id (either split); None for other ids."""
    parts = item_id.split("/")
    if len(parts) != 4 or parts[0] not in ("natural-rgb-test", "natural-rgb-val"):
        return None
    top, left = parts[2][1:].split("x")
    return parts[1], int(top), int(left), int(parts[3])


def _centre_crop(im: Tensor, size: int, what: str) -> Tensor:
    h, w = im.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"{what} is {h} x {w}, smaller than the {size} x {size} crop; use a smaller "
                         "size or remove the image")
    top, left = (h - size) // 2, (w - size) // 2
    return im[:, top:top + size, left:left + size]


def read_image(path: str | Path, channels: int = 3, resize: int | None = None) -> Tensor:
    """A PNG/JPEG file as (channels, H, W) float64 in [0, 1] (converted to RGB or grey by PIL);
    ``resize``: scale it first so that the shorter side has ``resize`` pixels (PIL Lanczos)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image {path} does not exist")
    with Image.open(path) as im:
        im = im.convert("RGB" if channels == 3 else "L")
        if resize is not None and min(im.size) != resize:
            scale = resize / min(im.size)
            im = im.resize((max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))),
                           Image.Resampling.LANCZOS)
        arr = np.asarray(im, dtype=np.float64) / 255.0
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _folder(spec: Folder) -> Dataset:
    root = Path(spec.path)
    if not root.is_dir():
        raise ValueError(f"data folder {root} does not exist")
    if spec.files is not None:
        files = [root / name for name in spec.files]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"{root} lacks {len(missing)} of the {len(files)} listed files, e.g. "
                             f"{missing[:3]}")
    else:
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{root} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    files = files[:spec.n] if spec.n else files
    if spec.n and len(files) < spec.n:
        raise ValueError(f"{root} holds {len(files)} images, fewer than n = {spec.n}")
    ims = [read_image(f, spec.channels, spec.resize) for f in files]
    if spec.size:
        ims = [_centre_crop(im, spec.size, str(f)) for im, f in zip(ims, files)]
    shapes = {tuple(im.shape) for im in ims}
    if len(shapes) > 1:
        raise ValueError(f"images in {root} have different shapes {sorted(shapes)}; set 'size' to "
                         "centre-crop them all to one square size")
    crop = f"c{spec.size}" if spec.size else "full"
    if spec.resize:
        crop = f"r{spec.resize}/{crop}"
    ids = [f"{f.name}#{_sha8(f)}/{crop}/{spec.channels}ch" for f in files]
    return Dataset(spec, f"folder {root.name}", ids, torch.stack(ims), (0.0, 1.0), "img_size")


def _tensor(spec: TensorFile) -> Dataset:
    path = Path(spec.path)
    if not path.is_file():
        raise ValueError(f"tensor file {path} does not exist")
    if path.suffix == ".npy":
        x = torch.from_numpy(np.load(path))
    elif path.suffix == ".pt":
        x = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(x, Tensor):
            raise ValueError(f"{path} holds a {type(x).__name__}; save one (N, C, H, W) tensor")
    else:
        raise ValueError(f"tensor file {path} must end in .pt or .npy")
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"{path} holds a {x.dtype} tensor of shape {tuple(x.shape)}; expected a float "
                         "(N, C, H, W) tensor")
    lo, hi = spec.data_range
    if not hi > lo:
        raise ValueError(f"data_range must be (lo, hi) with hi > lo, got {spec.data_range}")
    if spec.n:
        if spec.n > len(x):
            raise ValueError(f"{path} holds {len(x)} items, fewer than n = {spec.n}")
        x = x[:spec.n]
    sha = _sha8(path)
    ids = [f"{path.name}#{sha}[{i}]" for i in range(len(x))]
    return Dataset(spec, f"tensor {path.name}", ids, x.double(), (lo, hi), "img_size")


def _shepp(spec: SheppLogan) -> Dataset:
    from invsolve.priors.datasets import shepp_logan

    x = shepp_logan(spec.size)[None].double()
    return Dataset(spec, f"shepp-logan {spec.size}", [f"shepp-logan/{spec.size}"], x, (0.0, 1.0),
                   "img_size")


def _ct(spec: CTSlice) -> Dataset:
    from invsolve.priors.datasets import ct_slice

    return Dataset(spec, "ct-slice", ["ct-slice/CT_small.dcm"], ct_slice()[None].double(), (0.0, 1.0),
                   "img_size")


DARCY_VAL_SEED = 2
"""Seed of the Darcy validation fields (training: 0, test: 1)."""


def _darcy(spec: DarcyTest) -> Dataset:
    from invsolve.data import darcy_permeability
    from invsolve.priors.datasets import DARCY_UNITS, darcy_fields

    if spec.split == "test":
        x = darcy_fields(spec.n, "test", spec.size).double()
        ids = [f"darcy-test/{spec.size}/{i}" for i in range(spec.n)]
    else:
        lo, hi = DARCY_UNITS
        x = darcy_permeability(spec.n, spec.size, DARCY_VAL_SEED, a_low=lo, a_high=hi)[:, None].double()
        ids = [f"darcy-val/{spec.size}/{i}" for i in range(spec.n)]
    label = f"darcy-test {spec.size}" + (" (val)" if spec.split == "val" else "")
    return Dataset(spec, label, ids, x, tuple(DARCY_UNITS), "size")


PHANTOM_SEEDS = {"val": 101, "test": 102}
"""Seeds of the ellipse-phantom splits (the shipped phantom-ct prior trained on seed 0)."""


def _phantoms(spec: EllipsePhantoms) -> Dataset:
    from invsolve.priors.datasets import ellipse_phantoms

    seed = PHANTOM_SEEDS[spec.split]
    x = ellipse_phantoms(spec.n, spec.size, seed).double()
    ids = [f"ellipse-phantoms/s{seed}/{spec.size}/{i}" for i in range(spec.n)]
    return Dataset(spec, f"ellipse phantoms {spec.size} ({spec.split})", ids, x, (0.0, 1.0), "img_size")


def mr_slice() -> Tensor:
    """pydicom's bundled real MR slice ``MR_small.dcm`` as (1, 64, 64) float64 in [0, 1] (divided by
    its largest value)."""
    try:
        import pydicom
        from pydicom.data import get_testdata_file
    except ImportError as err:
        raise ValueError("the mr-slice data set needs pydicom: pip install pydicom") from err
    arr = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array.astype(np.float64)
    return torch.from_numpy(arr / arr.max())[None]


def _mr(spec: MRSlice) -> Dataset:
    return Dataset(spec, "mr-slice", ["mr-slice/MR_small.dcm"], mr_slice()[None], (0.0, 1.0), "img_size")


def _gmm(spec: GMMData) -> Dataset:
    sy = "random" if spec.sigma_y is None else f"{spec.sigma_y:g}"
    split = "/val" if spec.split == "val" else ""
    ids = [f"gmm/d{spec.dim}/dy{spec.dim_y}/sy{sy}{split}/p{spec.problem_seed(p)}" for p in range(spec.n)]
    label = f"gmm d={spec.dim} d_y={spec.dim_y} σ_y={sy}" + (" (val)" if split else "")
    return Dataset(spec, label, ids, None, (0.0, 1.0), None)


_LOADERS = {NaturalRGBTest: _natural, Folder: _folder, TensorFile: _tensor, SheppLogan: _shepp,
            CTSlice: _ct, DarcyTest: _darcy, GMMData: _gmm, EllipsePhantoms: _phantoms, MRSlice: _mr}


def load_dataset(spec: object) -> Dataset:
    """Load the data set described by a validated data spec (see ``config``)."""
    return _LOADERS[type(spec)](spec)
