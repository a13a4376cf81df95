"""Accelerated MRI on deepinv's ``MRI`` / ``MultiCoilMRI``: Cartesian undersampling masks with a fully
sampled centre, and simulated smooth coil sensitivities.

Complex data follow deepinv: a complex image (B, H, W) is stored as a real tensor (B, 2, H, W) with the
real part in channel 0 and the imaginary part in channel 1; k-space likewise, (B, 2, H, W) single-coil
and (B, 2, N, H, W) for N coils. The Fourier transform is centred (DC in the middle) and orthonormal
(``norm="ortho"``), so A^T A is the zero-filled reconstruction and ||A|| = 1 for single coil.
Real magnitude images enter through ``to_complex_channels``. Masks keep whole k-space columns
(phase-encoding lines along the last axis), as in fastMRI and the MRI tasks of DDS (arXiv 2303.05754)
and InverseBench (arXiv 2503.11043).
"""

from __future__ import annotations

import deepinv.physics as dp
import numpy as np
import torch
from deepinv.physics.generator import EquispacedMaskGenerator, RandomMaskGenerator
from torch import Tensor

from .imaging import ImgSize, ShapeChecked, check_img_size, make_noise
from .registry import register


def to_complex_channels(x: Tensor) -> Tensor:
    """Real image (B, 1, H, W) -> complex image in deepinv's layout (B, 2, H, W), imaginary part 0."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"to_complex_channels expects a real image (B, 1, H, W), got {tuple(x.shape)}")
    return torch.cat([x, torch.zeros_like(x)], dim=1)


def cartesian_mask(img_size: tuple[int, int], acceleration: int = 4, kind: str = "random",
                   center_fraction: float | None = None, seed: int = 0) -> Tensor:
    """Cartesian column mask (H, W) of 0/1 from deepinv's mask generators, seeded.

    ``kind="random"``: uniformly random columns; ``"equispaced"``: every ``acceleration``-th column.
    Both keep a fully sampled centre of ``center_fraction * W`` columns (default 0.08 for 4x, 0.04 for
    8x, the fastMRI convention) and sample about W / acceleration columns in total.
    """
    if len(img_size) != 2 or min(img_size) < 2:
        raise ValueError(f"img_size must be (H, W), got {img_size}")
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    gens = {"random": RandomMaskGenerator, "equispaced": EquispacedMaskGenerator}
    if kind not in gens:
        raise ValueError(f"kind must be one of {sorted(gens)}, got {kind!r}")
    gen = gens[kind](img_size=tuple(img_size), acceleration=int(acceleration),
                     center_fraction=center_fraction, rng=torch.Generator().manual_seed(seed))
    return gen.step(batch_size=1, seed=seed)["mask"].reshape(img_size).float()


def coil_sensitivities(n_coils: int, height: int, width: int, width_frac: float = 0.9) -> Tensor:
    """Smooth simulated receive-coil maps, complex (n_coils, H, W), with sum_c |s_c|^2 = 1.

    Coils sit evenly on a ring of radius 1.3 around the field of view ([-1, 1]^2); each map has a
    Gaussian magnitude profile of width ``width_frac`` around its coil and a slowly varying linear
    phase pointing towards it. Normalising to unit root-sum-of-squares keeps the multi-coil
    operator's norm at 1 (SENSE-style maps). Written here because deepinv only simulates birdcage
    maps through the optional sigpy dependency.
    """
    if n_coils < 1:
        raise ValueError(f"n_coils must be >= 1, got {n_coils}")
    yy, xx = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    maps = []
    for c in range(n_coils):
        ang = 2 * np.pi * c / n_coils
        cy, cx = 1.3 * np.sin(ang), 1.3 * np.cos(ang)
        mag = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width_frac**2))
        phase = np.pi / 2 * (yy * np.sin(ang) + xx * np.cos(ang)) + ang
        maps.append(mag * np.exp(1j * phase))
    s = np.stack(maps)
    s = s / np.sqrt((np.abs(s) ** 2).sum(0, keepdims=True))
    return torch.from_numpy(s).to(torch.complex64)


def _check_mask(mask: Tensor, img_size: tuple) -> Tensor:
    mask = torch.as_tensor(mask, dtype=torch.float32)
    if tuple(mask.shape) != img_size[1:]:
        raise ValueError(f"MRI mask must have shape (H, W) = {img_size[1:]}, got {tuple(mask.shape)}")
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("MRI mask must be binary (1 = sampled)")
    return mask


class MRI(ShapeChecked, dp.MRI):
    """Single-coil Cartesian MRI ``y = M F x``: (B, 2, H, W) -> (B, 2, H, W) (deepinv ``MRI``).

    Args:
        img_size: (2, H, W) (real/imaginary channels).
        mask: (H, W) binary k-space mask, e.g. ``cartesian_mask((H, W), 4)``.
        noise_sigma: std of the complex Gaussian noise per real channel (deepinv adds it on sampled
            k-space points only).
    """

    def __init__(self, img_size: ImgSize, mask: Tensor, noise_sigma: float = 0.0):
        img_size = check_img_size(img_size, channels=2)
        super().__init__(mask=_check_mask(mask, img_size), img_size=img_size[1:],
                         noise_model=make_noise(noise_sigma))
        self._set_shapes(img_size)


class MultiCoilMRI(ShapeChecked, dp.MultiCoilMRI):
    """Multi-coil Cartesian MRI ``y_c = M F (s_c x)``: (B, 2, H, W) -> (B, 2, N, H, W).

    Args:
        img_size: (2, H, W). mask: (H, W) binary mask shared by the coils.
        coil_maps: complex (N, H, W) sensitivities, e.g. ``coil_sensitivities(8, H, W)``.
        noise_sigma: std of the Gaussian noise per real channel and coil.
    """

    def __init__(self, img_size: ImgSize, mask: Tensor, coil_maps: Tensor, noise_sigma: float = 0.0):
        img_size = check_img_size(img_size, channels=2)
        coil_maps = torch.as_tensor(coil_maps)
        if not coil_maps.is_complex() or coil_maps.ndim != 3 or tuple(coil_maps.shape[1:]) != img_size[1:]:
            raise ValueError(f"coil_maps must be a complex tensor (N, H, W) with (H, W) = {img_size[1:]}, "
                             f"got {coil_maps.dtype} {tuple(coil_maps.shape)}")
        super().__init__(mask=_check_mask(mask, img_size), coil_maps=coil_maps, img_size=img_size[1:],
                         noise_model=make_noise(noise_sigma))
        self._set_shapes(img_size)


class RealMRI(dp.LinearPhysics):
    """Single-coil Cartesian MRI of a real image: (B, 1, H, W) -> k-space (B, 2, H, W).

    ``A x = M F (x + 0 i)``, the imaginary part fixed at 0 (magnitude-like images, e.g. a prior
    trained on real phantoms); ``A^T y = Re(F^H M y)``. Not decomposable (A^T A = Re(F^H M F) is not
    diagonal in any fixed basis), so the pseudo-inverse is deepinv's least-squares solve.
    """

    def __init__(self, img_size: ImgSize, mask: Tensor, noise_sigma: float = 0.0):
        img_size = check_img_size(img_size, channels=1)
        super().__init__(noise_model=make_noise(noise_sigma))
        self.complex_op = MRI((2, *img_size[1:]), mask)
        self.x_shape, self.y_shape = img_size, (2, *img_size[1:])

    def A(self, x: Tensor, *args, **kw) -> Tensor:
        if tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(f"RealMRI expects x of shape (B, {', '.join(map(str, self.x_shape))}), "
                             f"got {tuple(x.shape)}")
        return self.complex_op.A(to_complex_channels(x))

    def A_adjoint(self, y: Tensor, *args, **kw) -> Tensor:
        return self.complex_op.A_adjoint(y)[:, :1]


@register("mri", "single-coil Cartesian MRI, acceleration=4|8, mask=random|equispaced; x (B,2,H,W) "
                 "complex or (B,1,H,W) real")
def _mri(img_size: ImgSize = (2, 128, 128), acceleration: int = 4, mask: str = "random",
         center_fraction: float | None = None, seed: int = 0, noise_sigma: float = 0.0
         ) -> MRI | RealMRI:
    img_size = check_img_size(img_size)
    if img_size[0] not in (1, 2):
        raise ValueError(f"mri takes a complex image (2, H, W) or a real one (1, H, W), got {img_size}")
    m = cartesian_mask(img_size[1:], acceleration, mask, center_fraction, seed)
    return RealMRI(img_size, m, noise_sigma) if img_size[0] == 1 else MRI(img_size, m, noise_sigma)


@register("mri_multicoil", "multi-coil Cartesian MRI with simulated smooth coil maps (n_coils=8)")
def _mri_multicoil(img_size: ImgSize = (2, 128, 128), acceleration: int = 4, mask: str = "random",
                   n_coils: int = 8, center_fraction: float | None = None, seed: int = 0,
                   noise_sigma: float = 0.0) -> MultiCoilMRI:
    img_size = check_img_size(img_size, channels=2)
    m = cartesian_mask(img_size[1:], acceleration, mask, center_fraction, seed)
    return MultiCoilMRI(img_size, m, coil_sensitivities(n_coils, *img_size[1:]), noise_sigma)
