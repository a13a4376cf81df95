"""High dynamic range reconstruction (DAPS, arXiv 2407.01521): y = clip(alpha x, -1, 1) in [-1, 1] units.

deepinv has no clipping operator, so this is a small ``deepinv.physics.Physics`` subclass.

Mapping to invsolve's [0, 1] images: with x_pm = 2 x - 1 and y = (y_pm + 1) / 2,
``y = clip(alpha * (x - 0.5) + 0.5, 0, 1)``; alpha = 2 (DAPS) saturates every pixel outside
[0.25, 0.75]. A noise level of s on y_pm is s / 2 on y.
"""

from __future__ import annotations

from deepinv.physics import Physics
from torch import Tensor

from .imaging import ImgSize, check_img_size, check_shape, make_noise
from .registry import register


class HighDynamicRange(Physics):
    """``x (B, C, H, W) in [0, 1] -> clip(alpha (x - 1/2) + 1/2, 0, 1)``, same shape.

    Differentiable almost everywhere: gradient alpha where unsaturated, 0 where clipped.

    Args:
        img_size: (C, H, W). alpha: contrast factor > 0 (DAPS: 2).
        noise_sigma: Gaussian noise std in [0, 1] units.
    """

    def __init__(self, img_size: ImgSize = (3, 256, 256), alpha: float = 2.0, noise_sigma: float = 0.0):
        img_size = check_img_size(img_size)
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        super().__init__(noise_model=make_noise(noise_sigma))
        self.alpha = float(alpha)
        self.x_shape = img_size

    def A(self, x: Tensor, **kw) -> Tensor:
        check_shape(x, self.x_shape, "x", type(self).__name__)
        return (self.alpha * (x - 0.5) + 0.5).clamp(0.0, 1.0)


@register("hdr", "high dynamic range clip(alpha x, -1, 1) (DAPS, alpha=2), mapped to [0, 1] images")
def _hdr(img_size: ImgSize = (3, 256, 256), alpha: float = 2.0, noise_sigma: float = 0.0) -> HighDynamicRange:
    return HighDynamicRange(img_size, alpha, noise_sigma)
