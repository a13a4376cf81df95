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
    Folder,
    GMMData,
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


def _natural(spec: NaturalRGBTest) -> Dataset:
    from invsolve.priors.datasets import natural_rgb_images

    images, names = natural_rgb_images("test")
    s = spec.size
    cells = [(k, r, c) for k, im in enumerate(images)
             for r in range(im.shape[1] // s) for c in range(im.shape[2] // s)]
    if spec.n > len(cells):
        raise ValueError(f"natural-rgb-test has only {len(cells)} non-overlapping {s} x {s} crops; "
                         f"ask for n <= {len(cells)} or a smaller size")
    # a fixed order that needs no random generator (stable across library versions): sort by hash
    cells.sort(key=lambda t: hashlib.sha256(f"{names[t[0]]}/{t[1]}/{t[2]}".encode()).hexdigest())
    cells = cells[:spec.n]
    x = torch.stack([images[k][:, r * s:(r + 1) * s, c * s:(c + 1) * s] for k, r, c in cells])
    ids = [f"natural-rgb-test/{names[k]}/y{r * s}x{c * s}/{s}" for k, r, c in cells]
    return Dataset(spec, f"natural-rgb-test {s}x{s}", ids, x.double(), (0.0, 1.0), "img_size")


def _centre_crop(im: Tensor, size: int, what: str) -> Tensor:
    h, w = im.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"{what} is {h} x {w}, smaller than the {size} x {size} crop; use a smaller "
                         "size or remove the image")
    top, left = (h - size) // 2, (w - size) // 2
    return im[:, top:top + size, left:left + size]


def read_image(path: str | Path, channels: int = 3) -> Tensor:
    """A PNG/JPEG file as (channels, H, W) float64 in [0, 1] (converted to RGB or grey by PIL)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image {path} does not exist")
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB" if channels == 3 else "L"), dtype=np.float64) / 255.0
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _folder(spec: Folder) -> Dataset:
    root = Path(spec.path)
    if not root.is_dir():
        raise ValueError(f"data folder {root} does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{root} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    files = files[:spec.n] if spec.n else files
    if spec.n and len(files) < spec.n:
        raise ValueError(f"{root} holds {len(files)} images, fewer than n = {spec.n}")
    ims = [read_image(f, spec.channels) for f in files]
    if spec.size:
        ims = [_centre_crop(im, spec.size, str(f)) for im, f in zip(ims, files)]
    shapes = {tuple(im.shape) for im in ims}
    if len(shapes) > 1:
        raise ValueError(f"images in {root} have different shapes {sorted(shapes)}; set 'size' to "
                         "centre-crop them all to one square size")
    crop = f"c{spec.size}" if spec.size else "full"
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


def _darcy(spec: DarcyTest) -> Dataset:
    from invsolve.priors.datasets import DARCY_UNITS, darcy_fields

    x = darcy_fields(spec.n, "test", spec.size).double()
    ids = [f"darcy-test/{spec.size}/{i}" for i in range(spec.n)]
    return Dataset(spec, f"darcy-test {spec.size}", ids, x, tuple(DARCY_UNITS), "size")


def _gmm(spec: GMMData) -> Dataset:
    sy = "random" if spec.sigma_y is None else f"{spec.sigma_y:g}"
    ids = [f"gmm/d{spec.dim}/dy{spec.dim_y}/sy{sy}/p{p}" for p in range(spec.n)]
    return Dataset(spec, f"gmm d={spec.dim} d_y={spec.dim_y} σ_y={sy}", ids, None, (0.0, 1.0), None)


_LOADERS = {NaturalRGBTest: _natural, Folder: _folder, TensorFile: _tensor, SheppLogan: _shepp,
            CTSlice: _ct, DarcyTest: _darcy, GMMData: _gmm}


def load_dataset(spec: object) -> Dataset:
    """Load the data set described by a validated data spec (see ``config``)."""
    return _LOADERS[type(spec)](spec)
