"""Computed tomography on deepinv's ``Tomography``: sparse-view and limited-angle parallel beam, fan
beam, and a filtered back-projection (FBP) helper.

Units: x is a (B, 1, N, N) attenuation image (one value per pixel); y = R x is the sinogram of line
integrals in pixel units, (B, 1, D, A) with D detector bins (D = ceil(sqrt(2) N) for parallel beam) and
A angles in degrees. With ``normalize=False`` (the default here) the forward model is the one of
``skimage.transform.radon(x, theta, circle=False)``; ``normalize=True`` divides by the operator norm
(deepinv's default), which makes noise levels comparable across sizes and angle counts.
The adjoint is exact (autograd through the projector, deepinv's ``adjoint_via_backprop``), so
gradient-based solvers see the true A^T.
"""

from __future__ import annotations

from collections.abc import Sequence

import deepinv.physics as dp
import numpy as np
import torch
from deepinv.physics.functional.radon import AbstractFilter
from torch import Tensor

from .imaging import ImgSize, ShapeChecked, check_img_size, check_shape, make_noise
from .registry import register


class CT(ShapeChecked, dp.Tomography):
    """Parallel- or fan-beam Radon transform of a square single-channel image.

    Args:
        img_size: (1, N, N).
        angles: number of views spread uniformly over [0, ``angular_range``) degrees, or an explicit
            1-D sequence of angles in degrees.
        angular_range: degrees covered by ``angles`` when it is a count (180 = full parallel-beam
            data; 90 = the limited-angle task).
        fan_beam: fan-beam geometry of ``fan_geometry(N)`` instead of parallel beam.
        normalize: divide A by its operator norm (see the module docstring).
        noise_sigma / poisson_gain: see ``operators.imaging.make_noise``.
        dtype: dtype of the projector's grids (float64 for exact adjoint tests).

    ``fbp(y)`` gives the filtered back-projection (Ram-Lak filter); deepinv's ``A_dagger`` is the
    least-squares pseudo-inverse by conjugate gradients (``A_dagger(y, fbp=True)`` is FBP).
    """

    def __init__(self, img_size: ImgSize = (1, 128, 128), angles: int | Sequence[float] | Tensor = 30,
                 angular_range: float = 180.0, fan_beam: bool = False, normalize: bool = False,
                 noise_sigma: float = 0.0, poisson_gain: float | None = None,
                 dtype: torch.dtype = torch.float32):
        img_size = check_img_size(img_size, channels=1, square=True)
        if isinstance(angles, int):
            if angles < 1:
                raise ValueError(f"angles must be >= 1 views, got {angles}")
            if not 0 < angular_range <= 360:
                raise ValueError(f"angular_range must be in (0, 360] degrees, got {angular_range}")
            angles = torch.arange(angles, dtype=torch.float64) * (angular_range / angles)
        angles = torch.as_tensor(angles, dtype=dtype).flatten()
        if angles.numel() == 0:
            raise ValueError("angles is empty")
        super().__init__(angles=angles.to(dtype), img_width=img_size[1], circle=False,
                         adjoint_via_backprop=True, normalize=normalize, fan_beam=fan_beam,
                         fan_parameters=fan_geometry(img_size[1]) if fan_beam else None,
                         dtype=dtype, noise_model=make_noise(noise_sigma, poisson_gain))
        self._set_shapes(img_size)

    def _set_shapes(self, x_shape: tuple) -> None:
        self.x_shape = tuple(x_shape)
        with torch.no_grad():
            probe = torch.zeros((1, *self.x_shape), dtype=self.dtype)
            self.y_shape = tuple(dp.Tomography.A(self, probe).shape[1:])

    def _follow_dtype(self, t: Tensor) -> None:
        # The projector's grids and the autograd adjoint are built for one dtype (``dtype``).
        if t.dtype != self.dtype:
            raise ValueError(f"this CT operator was built for {self.dtype}, got input of {t.dtype}; "
                             f"build it with dtype={t.dtype}")

    def fbp(self, y: Tensor, window: str = "ramp", **kw) -> Tensor:
        """Filtered back-projection, (B, 1, D, A) -> (B, 1, N, N). Exact inversion formula for
        dense parallel-beam data; for fan beam it is the ramp-filtered adjoint (no fan weighting),
        a rough initialiser only. ``window``: the ramp filter's apodisation (``WINDOWS``; "hann" is
        the Learned Primal-Dual baseline), parallel beam only."""
        check_shape(y, self.y_shape, "y", type(self).__name__)
        if window != "ramp":
            if window not in WINDOWS:
                raise ValueError(f"fbp: window must be one of {sorted(WINDOWS)}, got {window!r}")
            if self.fan_beam:
                raise ValueError("fbp: windows other than 'ramp' are for parallel beam only")
            out = self.A_adjoint(WindowedRamp(window, dtype=self.dtype)(y)) * torch.pi / (2 * len(self.radon.theta))
            return out * self.operator_norm**2 if self.normalize else out
        return super().fbp(y, **kw)


WINDOWS = {
    "ramp": lambda k, n: torch.ones_like(k),
    "shepp-logan": lambda k, n: torch.sinc(k / n),
    "cosine": lambda k, n: torch.cos(torch.pi * k / n),
    "hamming": lambda k, n: 0.54 + 0.46 * torch.cos(2 * torch.pi * k / n),
    "hann": lambda k, n: 0.5 + 0.5 * torch.cos(2 * torch.pi * k / n),
}
"""Apodisation of the ramp filter at rfft frequency index k of a padded length n (the windows of
``skimage.transform.iradon``'s ``filter_name``)."""


class WindowedRamp(AbstractFilter):
    """deepinv's ramp filter times a window (``WINDOWS``). Written here because deepinv offers the
    plain ramp only, and skimage's windowed ``iradon`` assumes skimage's own projector, which differs
    from deepinv's by sub-pixel detector offsets and interpolation: skimage FBP of a deepinv sinogram
    of the 128^2 Shepp-Logan phantom, 30 views, noiseless, gives 19.6 dB where this gives 23.5."""

    def __init__(self, window: str = "hann", dtype: torch.dtype = torch.float32):
        super().__init__(dtype=dtype)
        self.window = window

    def create_filter(self, f: Tensor) -> Tensor:
        k = torch.arange(f.shape[-1], dtype=torch.float64, device=f.device)
        return f * WINDOWS[self.window](k, 2 * (f.shape[-1] - 1)).to(f.real.dtype)


def fan_geometry(n: int) -> dict[str, float]:
    """Fan-beam geometry for an N x N image, in cm: deepinv's source/detector radii (57.5 cm each,
    magnification 2) and detector width (258 x 0.077 cm), with the pixel size chosen so that the
    image's circumscribed circle fills 95% of the field of view, and about 1.1 sqrt(2) N detector
    cells. deepinv's default pixel size (0.5/N cm) leaves the object in a few central cells."""
    width = 258 * 0.077
    n_det = max(64, int(np.ceil(1.1 * np.sqrt(2) * n)))
    fov_radius = width / 2 / 2.0  # detector half-width over the magnification
    return {"pixel_spacing": 0.95 * 2 * fov_radius / (np.sqrt(2) * n), "source_radius": 57.5,
            "detector_radius": 57.5, "n_detector_pixels": n_det, "detector_spacing": width / n_det}


def fbp(operator: CT, y: Tensor) -> Tensor:
    """Filtered back-projection of sinogram ``y`` (B, 1, D, A) for ``operator``: (B, 1, N, N)."""
    return operator.fbp(y)


@register("ct_sparse", "parallel-beam CT, sparse views (angles=30 over 180 degrees)")
def _ct_sparse(img_size: ImgSize = (1, 128, 128), angles: int = 30, normalize: bool = False,
               noise_sigma: float = 0.0, poisson_gain: float | None = None,
               dtype: torch.dtype = torch.float32) -> CT:
    return CT(img_size, angles, 180.0, False, normalize, noise_sigma, poisson_gain, dtype)


@register("ct_limited", "parallel-beam CT, limited angle (angles=90 views over 90 of 180 degrees)")
def _ct_limited(img_size: ImgSize = (1, 128, 128), angles: int = 90, angular_range: float = 90.0,
                normalize: bool = False, noise_sigma: float = 0.0, poisson_gain: float | None = None,
                dtype: torch.dtype = torch.float32) -> CT:
    return CT(img_size, angles, angular_range, False, normalize, noise_sigma, poisson_gain, dtype)


@register("ct_fan", "fan-beam CT (angles=60 views over 360 degrees)")
def _ct_fan(img_size: ImgSize = (1, 128, 128), angles: int = 60, normalize: bool = False,
            noise_sigma: float = 0.0, poisson_gain: float | None = None,
            dtype: torch.dtype = torch.float32) -> CT:
    return CT(img_size, angles, 360.0, True, normalize, noise_sigma, poisson_gain, dtype)
