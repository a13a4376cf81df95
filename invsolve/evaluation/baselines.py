"""Classical baselines as registered solvers, so the evaluation runner's rows hold them beside the
diffusion solvers (DESIGN.md, "Learned priors: beat classical baselines on held-out data").

None of them calls the prior's network (0 NFE); the prior only lends its data range for clipping.
Importing this module registers them (``invsolve.evaluation.config`` does, so every evaluation and
tune config knows them):

- ``bicubic``: bicubic interpolation of the low-resolution image (super-resolution operators only),
  on the operator's own sampling grid (its sub-pixel offset is measured once on a linear ramp).
- ``biharmonic``: ``skimage.restoration.inpaint_biharmonic`` (Damelin & Hoang 2018) of the observed
  pixels (inpainting operators only).
- ``tv``: total-variation regularised least squares,
  argmin_x ||A x - y||^2 / (2 L) + weight * TV(x) with L = ||A||^2 (power iteration), by FISTA
  (Beck & Teboulle 2009) whose proximal step is deepinv's ``TVDenoiser`` (Chambolle-Pock on the
  isotropic TV), clipped to the data range. Dividing the data term by L makes ``weight`` an image-space
  quantity: the same weight means the same smoothing for a blur, a mask or a CT sinogram.
- ``tikhonov``: x = c + (A^T A + weight L I)^-1 A^T (y - A c), the ridge estimate shrunk toward the
  centre c of the data range (closed form through the SVD for decomposable operators, conjugate
  gradients on (A A^T + weight L I) otherwise), clipped.
- ``fbp``: filtered back-projection with a Hann-windowed ramp (``skimage.transform.iradon``,
  ``filter_name="hann"``; CT operators only), the Learned Primal-Dual paper's baseline.
- ``zero_filled``: A^T y, the zero-filled inverse FFT (single-coil MRI operators only; the real part
  for real images).

Weights (``tv``, ``tikhonov``) are best chosen on a validation split: ``invsolve tune`` with a grid
over ``weight`` (experiments/image_restoration.py does so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from deepinv.physics import LinearPhysics
from torch import Tensor

from invsolve.solvers.base import Solver
from invsolve.solvers.linalg import adjoint_gram_solve, operator_norm2
from invsolve.solvers.registry import register


def _clip(x: Tensor, prior) -> Tensor:
    rng = getattr(prior, "data_range", None)
    return x if rng is None else x.clamp(*rng)


def _linear(op, name: str) -> LinearPhysics:
    if not isinstance(op, LinearPhysics):
        raise ValueError(f"{name} needs a linear operator (deepinv LinearPhysics); got "
                         f"{type(op).__name__}: use a posterior solver such as dps or daps")
    return op


def _norm2(op: LinearPhysics, x_shape: tuple, like: Tensor) -> float:
    """||A||^2 (``linalg.operator_norm2``: power iteration to a relative change of 1e-9)."""
    return float(operator_norm2(op, x_shape, like, 1)[0])


# --- super-resolution -----------------------------------------------------------------------------
def sampling_offset(op, x_shape: tuple, factor: int, like: Tensor) -> tuple[float, float]:
    """Where the operator samples: y[i] sits at x position factor * i + offset (rows, columns),
    measured on linear ramps (a symmetric low-pass filter maps a ramp to itself)."""
    _, h, w = x_shape
    out = []
    for axis, n in ((-2, h), (-1, w)):
        ramp = torch.arange(n, dtype=like.dtype, device=like.device)
        ramp = ramp.view(-1, 1) if axis == -2 else ramp.view(1, -1)
        with torch.no_grad():
            y = op.A(ramp.expand(x_shape)[None].clone())[0, 0]
        i = y.shape[axis] // 2  # the middle, far from the circular wrap
        value = y[i, y.shape[-1] // 2] if axis == -2 else y[y.shape[-2] // 2, i]
        out.append(float(value) - factor * i)
    return out[0], out[1]


def bicubic_upsample(y: Tensor, factor: int, x_hw: tuple[int, int],
                     offset: tuple[float, float] = (0.0, 0.0)) -> Tensor:
    """Bicubic interpolation (Keys, a = -0.75 of ``grid_sample``) of y (B, C, h, w) onto the x grid,
    where y[i, j] is the value at x position (factor i + offset_r, factor j + offset_c); circular
    boundary."""
    pad = 3
    yp = F.pad(y, (pad, pad, pad, pad), mode="circular")
    h, w = x_hw
    rows = (torch.arange(h, dtype=y.dtype, device=y.device) - offset[0]) / factor + pad
    cols = (torch.arange(w, dtype=y.dtype, device=y.device) - offset[1]) / factor + pad
    gy = 2 * rows / (yp.shape[-2] - 1) - 1  # align_corners=True: -1 and 1 are the end pixel centres
    gx = 2 * cols / (yp.shape[-1] - 1) - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None].expand(len(y), h, w, 2)
    return F.grid_sample(yp, grid, mode="bicubic", padding_mode="border", align_corners=True)


@register
@dataclass
class Bicubic(Solver):
    """Bicubic interpolation of the low-resolution measurement (super-resolution baseline); 0 NFE."""

    name = "bicubic"
    baseline = True
    description = "Baseline: bicubic interpolation of y (super-resolution operators only)"
    steps: int = 1

    def expected_nfe(self) -> int:
        return 0

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        op = problem.operator
        factor = getattr(op, "factor", None)
        if factor is None or not hasattr(op, "filter"):
            raise ValueError(f"bicubic is the super-resolution baseline; {type(op).__name__} is not a "
                             "downsampling operator (use pinv, tikhonov or tv)")
        like = self.like(problem)
        offset = sampling_offset(op, problem.x_shape, int(factor), like)
        x = bicubic_upsample(problem.y.to(like.dtype), int(factor), problem.x_shape[1:], offset)
        return _clip(x, prior), {"baseline": "bicubic", "offset": offset}


# --- inpainting -------------------------------------------------------------------------------------
@register
@dataclass
class Biharmonic(Solver):
    """``skimage.restoration.inpaint_biharmonic`` of the observed pixels (inpainting baseline)."""

    name = "biharmonic"
    baseline = True
    description = "Baseline: biharmonic inpainting (scikit-image; inpainting operators only)"
    steps: int = 1

    def expected_nfe(self) -> int:
        return 0

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        from skimage.restoration import inpaint_biharmonic

        op = problem.operator
        mask = getattr(op, "mask", None)
        if not torch.is_tensor(mask) or tuple(mask.shape[-3:]) != tuple(problem.x_shape) or \
                not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"biharmonic is the inpainting baseline; {type(op).__name__} has no "
                             "binary pixel mask (use pinv, tikhonov or tv)")
        like = self.like(problem)
        missing = (mask.reshape(problem.x_shape) == 0).cpu().numpy()
        out = []
        for y in problem.y.detach().cpu().double().numpy():
            x = np.empty_like(y)
            for c in range(y.shape[0]):  # channel by channel: masks may differ between channels
                x[c] = inpaint_biharmonic(y[c], missing[c]) if missing[c].any() else y[c]
            out.append(x)
        x = torch.from_numpy(np.stack(out)).to(like)
        return _clip(x, prior), {"baseline": "biharmonic"}


# --- variational ----------------------------------------------------------------------------------
@register
@dataclass
class TV(Solver):
    """argmin ||A x - y||^2 / (2 L) + weight TV(x) over the data range, FISTA with deepinv's TV prox.

    ``steps``: FISTA iterations; ``inner``: Chambolle-Pock iterations of each prox (warm-started from
    the previous one); ``weight``: the TV weight in image units (data term divided by L = ||A||^2).
    Every iteration runs to the end (no tolerance), so a sample's result does not depend on its batch.
    """

    name = "tv"
    baseline = True
    description = "Baseline: total-variation regularised least squares (FISTA, deepinv TV prox)"
    steps: int = 200
    weight: float = 0.02
    inner: int = 20

    def validate(self) -> None:
        if not self.weight >= 0:
            raise ValueError(f"tv: weight must be >= 0, got {self.weight}")
        if self.inner < 1:
            raise ValueError(f"tv: inner must be >= 1, got {self.inner}")

    def expected_nfe(self) -> int:
        return 0

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        from deepinv.models import TVDenoiser

        op = _linear(problem.operator, "tv")
        like = self.like(problem)
        lip = _norm2(op, problem.x_shape, like)
        prox = TVDenoiser(n_it_max=self.inner, crit=0.0)
        y = problem.y
        with torch.no_grad():
            x = _clip(op.A_adjoint(y).real.to(like.dtype) / lip, prior)
            z, t = x, 1.0
            for i in self.iterate():
                grad = op.A_adjoint(op.A(z) - y).real.to(like.dtype) / lip
                x_new = _clip(prox(z - grad, ths=self.weight), prior) if self.weight > 0 else \
                    _clip(z - grad, prior)
                t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
                z = x_new + ((t - 1) / t_new) * (x_new - x)
                x, t = x_new, t_new
                self.guard(x, i, "weight")
        return x, {"baseline": "tv", "lipschitz": lip}


@register
@dataclass
class Tikhonov(Solver):
    """c + (A^T A + weight L I)^-1 A^T (y - A c), c the data-range centre, L = ||A||^2; clipped.

    Closed form through the SVD for decomposable operators; otherwise conjugate gradients on the
    y-space system (A A^T + weight L I) u = y - A c (at most ``steps`` iterations), x = c + A^T u.
    """

    name = "tikhonov"
    baseline = True
    description = "Baseline: Tikhonov-regularised least squares toward mid-range (closed form or CG)"
    steps: int = 200
    weight: float = 0.01

    def validate(self) -> None:
        if not self.weight > 0:
            raise ValueError(f"tikhonov: weight must be > 0, got {self.weight}")

    def expected_nfe(self) -> int:
        return 0

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        op = _linear(problem.operator, "tikhonov")
        like = self.like(problem)
        lip = _norm2(op, problem.x_shape, like)
        center = float(getattr(prior, "data_center", 0.0) or 0.0)
        with torch.no_grad():
            c = torch.full((len(problem), *problem.x_shape), center, dtype=like.dtype, device=like.device)
            r = problem.y - op.A(c)
            x = c + adjoint_gram_solve(op, r, 1.0, self.weight * lip, max_iter=self.steps,
                                       floor=0.0).real.to(like.dtype)
        return _clip(x, prior), {"baseline": "tikhonov", "lipschitz": lip}


# --- CT and MRI -------------------------------------------------------------------------------------
@register
@dataclass
class FBP(Solver):
    """Filtered back-projection with a windowed ramp filter (``operators.CT.fbp``; CT only), in
    the operator's own projector geometry (skimage's ``iradon`` on deepinv's sinograms lost ~4 dB).

    ``filter``: "hann" (default; the Learned Primal-Dual baseline), "ramp", "shepp-logan", "cosine",
    "hamming". Parallel-beam operators only.
    """

    name = "fbp"
    baseline = True
    description = "Baseline: filtered back-projection, Hann filter (parallel-beam CT only)"
    steps: int = 1
    filter: str = "hann"

    def validate(self) -> None:
        if self.filter not in ("ramp", "shepp-logan", "cosine", "hamming", "hann"):  # operators.tomography.WINDOWS
            raise ValueError(f"fbp: filter must be ramp, shepp-logan, cosine, hamming or hann, got "
                             f"{self.filter!r}")

    def expected_nfe(self) -> int:
        return 0

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        from invsolve.operators.tomography import CT

        op = problem.operator
        if not isinstance(op, CT) or getattr(op, "fan_beam", False):
            raise ValueError(f"fbp needs a parallel-beam CT operator (ct_sparse, ct_limited); got "
                             f"{type(op).__name__} (use tikhonov or tv)")
        like = self.like(problem)
        with torch.no_grad():
            x = op.fbp(problem.y.to(op.dtype), window=self.filter).to(like)
        return _clip(x, prior), {"baseline": f"fbp ({self.filter})"}


@register
@dataclass
class ZeroFilled(Solver):
    """A^T y: the zero-filled inverse FFT of single-coil Cartesian MRI (real part for real images)."""

    name = "zero_filled"
    baseline = True
    description = "Baseline: zero-filled inverse FFT A^T y (single-coil MRI only)"
    steps: int = 1

    def expected_nfe(self) -> int:
        return 0

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        from invsolve.operators.mri import MRI, RealMRI

        op = problem.operator
        if not isinstance(op, (MRI, RealMRI)):
            raise ValueError(f"zero_filled is the single-coil MRI baseline; got {type(op).__name__} "
                             "(use pinv)")
        like = self.like(problem)
        with torch.no_grad():
            x = op.A_adjoint(problem.y).to(like.dtype)
        return _clip(x, prior), {"baseline": "zero-filled"}


BASELINES = ("bicubic", "biharmonic", "tv", "tikhonov", "fbp", "zero_filled")
"""Names of the baselines this module registers."""
