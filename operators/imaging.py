"""Image-restoration operators on deepinv physics: blur, inpainting, super-resolution, denoising,
colourisation.

Images are (B, C, H, W) tensors in [0, 1]. Every operator here is a thin subclass of the matching
``deepinv.physics`` class (BlurFFT, Blur, Inpainting, Downsampling, Denoising, Decolorize) that adds only
two things deepinv leaves out: a fixed image size checked on every call (no silent broadcasting or
resizing; bad shapes raise ``ValueError``) and a noise model built from ``noise_sigma`` / ``poisson_gain``.

Task settings follow the papers: DPS (Chung et al., arXiv 2209.14687) and DAPS (Zhang et al., arXiv
2407.01521) on 256x256 FFHQ/ImageNet: Gaussian blur 61x61 with std 3.0, motion blur 61x61 with
intensity 0.5, box inpainting 128x128 of 256x256, random inpainting with 92% (DPS) or 70% (DAPS) of the
pixels missing, bicubic super-resolution x4. Uniform 9x9 blur follows DDRM (arXiv 2201.11793).
"""

from __future__ import annotations

from collections.abc import Sequence

import deepinv.physics as dp
import deepinv.physics.functional as dF
import numpy as np
import torch
from deepinv.physics import GaussianNoise, PoissonNoise, ZeroNoise
from deepinv.physics.generator import MotionBlurGenerator
from deepinv.physics.noise import NoiseModel
from torch import Tensor

from .registry import register

ImgSize = Sequence[int]


# --- shared helpers (also used by tomography, mri, phase_retrieval, hdr) ------------------------
def make_noise(noise_sigma: float = 0.0, poisson_gain: float | None = None) -> NoiseModel:
    """deepinv noise model: ``ZeroNoise`` (sigma 0), ``GaussianNoise(sigma)`` or ``PoissonNoise(gain)``.

    Poisson noise (``y = gain * Poisson(A x / gain)``, deepinv's ``normalize=True`` convention) and
    Gaussian noise are exclusive; ``Problem.misfit`` reads the likelihood from the returned model.
    """
    if noise_sigma is None or not np.isfinite(noise_sigma) or noise_sigma < 0:
        raise ValueError(f"noise_sigma must be a finite number >= 0, got {noise_sigma}")
    if poisson_gain is not None:
        if not poisson_gain > 0:
            raise ValueError(f"poisson_gain must be > 0, got {poisson_gain}")
        if noise_sigma > 0:
            raise ValueError("give either noise_sigma (Gaussian) or poisson_gain (Poisson), not both")
        return PoissonNoise(gain=float(poisson_gain), normalize=True)
    return GaussianNoise(sigma=float(noise_sigma)) if noise_sigma > 0 else ZeroNoise()


def check_img_size(img_size: ImgSize, channels: int | None = None, square: bool = False) -> tuple:
    """Validate a (C, H, W) image size; ``channels`` (if given) is the required C."""
    if isinstance(img_size, int) or len(img_size) != 3 or any(int(s) < 1 for s in img_size):
        raise ValueError(f"img_size must be (C, H, W) with positive entries, got {img_size!r}")
    img_size = tuple(int(s) for s in img_size)
    if channels is not None and img_size[0] != channels:
        raise ValueError(f"this operator expects {channels} channel(s), got img_size={img_size}")
    if square and img_size[1] != img_size[2]:
        raise ValueError(f"this operator expects a square image, got img_size={img_size}")
    return img_size


def check_shape(t: Tensor, shape: tuple, what: str, owner: str) -> None:
    """Raise ``ValueError`` unless ``t`` has shape (B, *shape)."""
    if not isinstance(t, Tensor) or t.ndim != len(shape) + 1 or tuple(t.shape[1:]) != tuple(shape):
        got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{owner} expects {what} of shape (B, {', '.join(map(str, shape))}), got {got}")


class ShapeChecked:
    """Mixin for a deepinv physics: ``A`` / ``A_adjoint`` check the input shape against the fixed
    ``x_shape`` / ``y_shape`` (per sample) and raise ``ValueError`` otherwise, because the deepinv
    classes adapt to whatever they are given. Call ``_set_shapes(x_shape)`` at the end of ``__init__``.
    """

    x_shape: tuple
    y_shape: tuple

    def _set_shapes(self, x_shape: tuple) -> None:
        self.x_shape = tuple(x_shape)
        with torch.no_grad():
            probe = torch.zeros((1, *self.x_shape))
            self.y_shape = tuple(super().A(probe).shape[1:])

    def _follow_dtype(self, t: Tensor) -> None:
        # Operators follow the input's real dtype (float64 tests, float32 runs): cast the buffers once.
        # (Module.to(float64) would drop the imaginary part of complex buffers, hence by hand.)
        dtype = t.real.dtype if t.is_complex() else t.dtype
        if not dtype.is_floating_point:
            return
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        for mod in self.modules():
            for name, b in mod._buffers.items():
                if b is not None and b.is_floating_point() and b.dtype != dtype:
                    mod._buffers[name] = b.to(dtype)
                elif b is not None and b.is_complex() and b.dtype != cdtype:
                    mod._buffers[name] = b.to(cdtype)

    def to(self, *args, **kwargs):
        """``Module.to`` that keeps complex buffers complex: ``op.to(torch.float64)`` would otherwise
        cast a Fourier filter's complex phase to real and silently change the operator."""
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        out = super().to(device=device) if device is not None else self
        if dtype is not None:
            self._follow_dtype(torch.empty(0, dtype=dtype))
        return out

    def A(self, x: Tensor, *args, **kw) -> Tensor:
        check_shape(x, self.x_shape, "x", type(self).__name__)
        self._follow_dtype(x)
        return super().A(x, *args, **kw)

    def A_adjoint(self, y: Tensor, *args, **kw) -> Tensor:
        check_shape(y, self.y_shape, "y", type(self).__name__)
        self._follow_dtype(y)
        return super().A_adjoint(y, *args, **kw)


# --- blur --------------------------------------------------------------------------------------
def gaussian_kernel(size: int = 61, std: float = 3.0) -> Tensor:
    """Normalised isotropic Gaussian PSF, (1, 1, size, size); DPS/DAPS use size 61, std 3.0."""
    if size < 1 or std <= 0:
        raise ValueError(f"gaussian_kernel needs size >= 1 and std > 0, got size={size}, std={std}")
    k = dF.gaussian_blur(psf_size=(size, size), sigma=float(std))
    return k / k.sum()


def uniform_kernel(size: int = 9) -> Tensor:
    """Box PSF of ``size`` x ``size`` pixels, (1, 1, size, size) (DDRM's 9x9 uniform deblurring)."""
    if size < 1:
        raise ValueError(f"uniform_kernel needs size >= 1, got {size}")
    return torch.full((1, 1, size, size), 1.0 / size**2)


def motion_kernel(size: int = 61, intensity: float = 0.25, seed: int = 0) -> Tensor:
    """Random motion-blur PSF, (1, 1, size, size), from deepinv's ``MotionBlurGenerator`` (a Matern
    Gaussian-process camera trajectory), seeded and reproducible. DPS draws 61x61 kernels with
    "intensity 0.5" from a different trajectory model (Borodenko's random walk); here ``intensity``
    is the std of deepinv's trajectory (its default 0.25), in units of the kernel half-width, so the
    two numbers are not the same parameter.
    """
    if size < 3:
        raise ValueError(f"motion_kernel needs size >= 3, got {size}")
    gen = MotionBlurGenerator(psf_size=(size, size), rng=torch.Generator().manual_seed(seed),
                              sigma=float(intensity), l=0.3)
    return gen.step(batch_size=1, seed=seed)["filter"].reshape(1, 1, size, size)


def _check_kernel(kernel: Tensor, img_size: tuple) -> Tensor:
    kernel = torch.as_tensor(kernel)
    if kernel.ndim == 2:
        kernel = kernel[None, None]
    if kernel.ndim != 4 or kernel.shape[:2] != (1, 1):
        raise ValueError(f"kernel must have shape (k, k) or (1, 1, kh, kw), got {tuple(kernel.shape)}")
    if kernel.shape[-2] > img_size[1] or kernel.shape[-1] > img_size[2]:
        raise ValueError(f"kernel {tuple(kernel.shape[-2:])} is larger than the image {img_size[1:]}; "
                         "use a smaller kernel or a larger image")
    return kernel


class CircularBlur(ShapeChecked, dp.BlurFFT):
    """Convolution with circular boundary, ``x (B, C, H, W) -> k * x (B, C, H, W)``, same kernel on
    every channel. deepinv's ``BlurFFT`` (decomposable: exact pseudo-inverse and prox by FFT).

    Args:
        img_size: (C, H, W). kernel: (k, k) or (1, 1, kh, kw) PSF no larger than the image.
        noise_sigma / poisson_gain: see ``make_noise``.
    """

    def __init__(self, img_size: ImgSize, kernel: Tensor, noise_sigma: float = 0.0,
                 poisson_gain: float | None = None):
        img_size = check_img_size(img_size)
        super().__init__(img_size=img_size, filter=_check_kernel(kernel, img_size),
                         noise_model=make_noise(noise_sigma, poisson_gain))
        self._set_shapes(img_size)


class ValidBlur(ShapeChecked, dp.Blur):
    """Convolution without padding ('valid'): ``x (B, C, H, W) -> (B, C, H - kh + 1, W - kw + 1)``.

    No boundary assumption at all, at the price of a smaller measurement. deepinv's ``Blur`` (FFT
    convolution, so 61x61 kernels stay cheap). Args as ``CircularBlur``.
    """

    def __init__(self, img_size: ImgSize, kernel: Tensor, noise_sigma: float = 0.0,
                 poisson_gain: float | None = None):
        img_size = check_img_size(img_size)
        super().__init__(filter=_check_kernel(kernel, img_size), padding="valid", use_fft=True,
                         noise_model=make_noise(noise_sigma, poisson_gain))
        self._set_shapes(img_size)


def make_blur(img_size: ImgSize, kernel: Tensor, padding: str = "circular", noise_sigma: float = 0.0,
              poisson_gain: float | None = None) -> CircularBlur | ValidBlur:
    """Blur with ``padding`` in {"circular", "valid"} (see ``CircularBlur`` / ``ValidBlur``)."""
    if padding == "circular":
        return CircularBlur(img_size, kernel, noise_sigma, poisson_gain)
    if padding == "valid":
        return ValidBlur(img_size, kernel, noise_sigma, poisson_gain)
    raise ValueError(f"padding must be 'circular' or 'valid', got {padding!r}")


# --- inpainting --------------------------------------------------------------------------------
def box_mask(img_size: ImgSize, box: int | None = None) -> Tensor:
    """Centred square hole: 1 = observed, 0 = missing, shape (H, W). Default side ``H // 2``, i.e.
    the 128x128 box of 256x256 images in DPS/DAPS, scaled with the image size."""
    _, h, w = check_img_size(img_size)
    box = h // 2 if box is None else int(box)
    if not 0 < box <= min(h, w):
        raise ValueError(f"box side must be in 1..{min(h, w)}, got {box}")
    m = torch.ones(h, w)
    t, le = (h - box) // 2, (w - box) // 2
    m[t:t + box, le:le + box] = 0
    return m


def random_mask(img_size: ImgSize, missing: float = 0.7, seed: int = 0) -> Tensor:
    """Pixels missing independently with probability ``missing`` (all channels of a pixel
    together), shape (H, W), reproducible from ``seed``. DAPS: 70% missing; DPS: 92% missing."""
    _, h, w = check_img_size(img_size)
    if not 0 <= missing < 1:
        raise ValueError(f"missing must be a fraction in [0, 1), got {missing}")
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(h, w, generator=g) >= missing).float()


def half_mask(img_size: ImgSize, side: str = "right") -> Tensor:
    """One half of the image missing (``side`` in left/right/top/bottom), shape (H, W)."""
    _, h, w = check_img_size(img_size)
    m = torch.ones(h, w)
    halves = {"right": (slice(None), slice(w // 2, None)), "left": (slice(None), slice(None, w // 2)),
              "bottom": (slice(h // 2, None), slice(None)), "top": (slice(None, h // 2), slice(None))}
    if side not in halves:
        raise ValueError(f"side must be one of {sorted(halves)}, got {side!r}")
    m[halves[side]] = 0
    return m


def freeform_mask(img_size: ImgSize, seed: int = 0, strokes: int = 4, max_vertices: int = 8,
                  width_frac: float = 0.06, max_len_frac: float = 0.3) -> Tensor:
    """Free-form (brush-stroke) mask, shape (H, W), 1 = observed, reproducible from ``seed``.

    Thick random polylines in the style of the free-form masks of DeepFill v2 (Yu et al., ICCV 2019)
    used for inpainting benchmarks; deepinv has no such generator, hence this one. Each of ``strokes``
    strokes has up to ``max_vertices`` segments of length <= ``max_len_frac * H`` and brush width
    ``width_frac * H``.
    """
    _, h, w = check_img_size(img_size)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    hole = np.zeros((h, w), dtype=bool)
    radius = max(1.0, width_frac * h / 2)
    for _ in range(strokes):
        p = rng.uniform([0, 0], [h, w])
        for _ in range(rng.integers(2, max_vertices + 1)):
            ang = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(0.1, 1.0) * max_len_frac * h
            q = np.clip(p + length * np.array([np.sin(ang), np.cos(ang)]), 0, [h - 1, w - 1])
            d = q - p
            t = ((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / max(float(d @ d), 1e-12)
            t = np.clip(t, 0, 1)
            hole |= (yy - p[0] - t * d[0]) ** 2 + (xx - p[1] - t * d[1]) ** 2 <= radius**2
            p = q
    return torch.from_numpy(~hole).float()


class Inpainting(ShapeChecked, dp.Inpainting):
    """Masked identity ``x (B, C, H, W) -> m * x`` with a fixed binary mask (deepinv ``Inpainting``).

    Args:
        img_size: (C, H, W).
        mask: (H, W) (same on every channel) or (C, H, W) tensor of 0/1; 1 = observed. Any other
            shape raises ``ValueError``. Stored expanded to (1, C, H, W).
        noise_sigma / poisson_gain: see ``make_noise``.
    """

    def __init__(self, img_size: ImgSize, mask: Tensor, noise_sigma: float = 0.0,
                 poisson_gain: float | None = None):
        img_size = check_img_size(img_size)
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if tuple(mask.shape) == img_size[1:]:
            mask = mask.expand(img_size).clone()
        if tuple(mask.shape) != img_size:
            raise ValueError(f"mask must have shape (H, W) = {img_size[1:]} or (C, H, W) = {img_size}, "
                             f"got {tuple(mask.shape)}")
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError("mask must be binary (0 = missing, 1 = observed)")
        super().__init__(img_size=img_size, mask=mask, noise_model=make_noise(noise_sigma, poisson_gain))
        self._set_shapes(img_size)


# --- super-resolution --------------------------------------------------------------------------
class SuperResolution(ShapeChecked, dp.Downsampling):
    """Low-pass filter then keep every ``factor``-th pixel: (B, C, H, W) -> (B, C, H/f, W/f).

    ``filter="bicubic"``: deepinv's antialiased bicubic kernel (4f x 4f, Keys a = -0.5), the kernel of
    MATLAB ``imresize`` used by the DPS/DAPS "bicubic" SR tasks (their code: the Resizer of Shocher
    et al.), here with circular boundary (so deepinv's FFT prox applies) instead of reflection.
    ``filter="pool"``: average pooling over f x f blocks (box filter, valid convolution).

    Args:
        img_size: (C, H, W), with H and W divisible by ``factor``.
        factor: integer downsampling factor (2, 4, 8 in the papers).
        noise_sigma / poisson_gain: see ``make_noise``.
    """

    def __init__(self, img_size: ImgSize, factor: int = 4, filter: str = "bicubic",
                 noise_sigma: float = 0.0, poisson_gain: float | None = None):
        img_size = check_img_size(img_size)
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        factor = int(factor)
        if img_size[1] % factor or img_size[2] % factor:
            raise ValueError(f"SR factor {factor} must divide the image size {img_size[1:]}; "
                             "crop or pad the image first")
        if filter == "bicubic":
            kw = {"filter": "bicubic", "padding": "circular"}
        elif filter == "pool":
            kw = {"filter": torch.full((1, 1, factor, factor), 1.0 / factor**2), "padding": "valid"}
        else:
            raise ValueError(f"filter must be 'bicubic' or 'pool', got {filter!r}")
        super().__init__(img_size=img_size, factor=factor,
                         noise_model=make_noise(noise_sigma, poisson_gain), **kw)
        self._set_shapes(img_size)


# --- denoising and colourisation ---------------------------------------------------------------
class Denoising(ShapeChecked, dp.Denoising):
    """Identity ``x -> x`` on (B, C, H, W) with the chosen noise (deepinv ``Denoising``)."""

    def __init__(self, img_size: ImgSize, noise_sigma: float = 0.0, poisson_gain: float | None = None):
        img_size = check_img_size(img_size)
        super().__init__(noise_model=make_noise(noise_sigma, poisson_gain))
        self._set_shapes(img_size)


class Colorization(ShapeChecked, dp.Decolorize):
    """Grey-scale image = average of the channels: (B, C, H, W) -> (B, 1, H, W) (deepinv
    ``Decolorize`` with a flat spectral response, as DDRM's colourisation task)."""

    def __init__(self, img_size: ImgSize = (3, 256, 256), noise_sigma: float = 0.0,
                 poisson_gain: float | None = None):
        img_size = check_img_size(img_size)
        if img_size[0] < 2:
            raise ValueError(f"colourisation needs a multi-channel image, got img_size={img_size}")
        super().__init__(channels=img_size[0], srf="average",
                         noise_model=make_noise(noise_sigma, poisson_gain))
        self._set_shapes(img_size)


# --- registry ----------------------------------------------------------------------------------
_IMG = (3, 256, 256)


@register("blur_gauss", "Gaussian blur (DPS/DAPS: 61x61, std 3.0); padding circular|valid")
def _blur_gauss(img_size: ImgSize = _IMG, kernel_size: int = 61, std: float = 3.0,
                padding: str = "circular", noise_sigma: float = 0.0,
                poisson_gain: float | None = None) -> dp.LinearPhysics:
    return make_blur(img_size, gaussian_kernel(kernel_size, std), padding, noise_sigma, poisson_gain)


@register("blur_motion", "random motion blur (61x61, seeded deepinv generator); padding circular|valid")
def _blur_motion(img_size: ImgSize = _IMG, kernel_size: int = 61, intensity: float = 0.25, seed: int = 0,
                 padding: str = "circular", noise_sigma: float = 0.0,
                 poisson_gain: float | None = None) -> dp.LinearPhysics:
    return make_blur(img_size, motion_kernel(kernel_size, intensity, seed), padding, noise_sigma,
                     poisson_gain)


@register("blur_uniform", "uniform box blur (DDRM: 9x9); padding circular|valid")
def _blur_uniform(img_size: ImgSize = _IMG, kernel_size: int = 9, padding: str = "circular",
                  noise_sigma: float = 0.0, poisson_gain: float | None = None) -> dp.LinearPhysics:
    return make_blur(img_size, uniform_kernel(kernel_size), padding, noise_sigma, poisson_gain)


@register("inpaint_box", "centred box hole (128x128 of 256, scaled with the image)")
def _inpaint_box(img_size: ImgSize = _IMG, box: int | None = None, noise_sigma: float = 0.0,
                 poisson_gain: float | None = None) -> Inpainting:
    return Inpainting(img_size, box_mask(img_size, box), noise_sigma, poisson_gain)


@register("inpaint_random", "random missing pixels (DAPS 70%, DPS 92%), seeded")
def _inpaint_random(img_size: ImgSize = _IMG, missing: float = 0.7, seed: int = 0,
                    noise_sigma: float = 0.0, poisson_gain: float | None = None) -> Inpainting:
    return Inpainting(img_size, random_mask(img_size, missing, seed), noise_sigma, poisson_gain)


@register("inpaint_half", "one half of the image missing (side=right|left|top|bottom)")
def _inpaint_half(img_size: ImgSize = _IMG, side: str = "right", noise_sigma: float = 0.0,
                  poisson_gain: float | None = None) -> Inpainting:
    return Inpainting(img_size, half_mask(img_size, side), noise_sigma, poisson_gain)


@register("inpaint_freeform", "free-form brush-stroke holes, seeded")
def _inpaint_freeform(img_size: ImgSize = _IMG, seed: int = 0, noise_sigma: float = 0.0,
                      poisson_gain: float | None = None) -> Inpainting:
    return Inpainting(img_size, freeform_mask(img_size, seed), noise_sigma, poisson_gain)


def _sr(factor: int, filter: str):
    def build(img_size: ImgSize = _IMG, noise_sigma: float = 0.0,
              poisson_gain: float | None = None) -> SuperResolution:
        return SuperResolution(img_size, factor, filter, noise_sigma, poisson_gain)

    return build


for _f in (2, 4, 8):
    register(f"sr{_f}", f"super-resolution x{_f}, bicubic antialiasing filter")(_sr(_f, "bicubic"))
    register(f"sr{_f}_pool", f"super-resolution x{_f}, average pooling")(_sr(_f, "pool"))


@register("denoise", "identity (denoising); noise_sigma or poisson_gain")
def _denoise(img_size: ImgSize = _IMG, noise_sigma: float = 0.0,
             poisson_gain: float | None = None) -> Denoising:
    return Denoising(img_size, noise_sigma, poisson_gain)


@register("colorize", "colourisation: grey = average of the channels")
def _colorize(img_size: ImgSize = _IMG, noise_sigma: float = 0.0,
              poisson_gain: float | None = None) -> Colorization:
    return Colorization(img_size, noise_sigma, poisson_gain)
