"""Fourier phase retrieval y = |F(pad(x))|, the nonlinear task of DPS (arXiv 2209.14687) and DAPS
(arXiv 2407.01521).

deepinv's ``PhaseRetrieval`` family measures |B x|^2 with a random or structured linear B; the
oversampled Fourier magnitude of the diffusion-posterior papers is not among them, so it is written here
as a ``deepinv.physics.Physics`` subclass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from deepinv.physics import Physics
from torch import Tensor

from .imaging import ImgSize, check_img_size, check_shape, make_noise
from .registry import register


class FourierPhaseRetrieval(Physics):
    """Fourier magnitude of the zero-padded image: (B, C, H, W) -> (B, C, H + 2p, W + 2p), p = pad.

    ``A(x) = |fft2(pad(x), norm="ortho")|`` channel by channel. Padding follows the DPS/DAPS setting
    "oversampling 2.0": ``p = int(oversample / 8 * H)`` zeros on every side, i.e. a (1.5 H)^2 canvas
    for oversample 2 (so the support constraint that makes the problem solvable is x's footprint in
    the canvas). The measurement is invariant to a global sign of x, to circular translations of x
    inside the canvas, and to the conjugate flip x(-r), the trivial ambiguities of phase retrieval.
    Images are in [0, 1] (DPS/DAPS use [-1, 1]; the magnitudes scale accordingly).
    ``A`` is differentiable wherever F(pad(x)) has no zero (autograd; gradient of |z| is z/|z|).

    Args:
        img_size: (C, H, W). oversample: see above (``pad`` overrides it, in pixels).
        noise_sigma: Gaussian noise std on the magnitudes (DPS/DAPS: 0.05).
    """

    def __init__(self, img_size: ImgSize = (3, 256, 256), oversample: float = 2.0,
                 pad: int | None = None, noise_sigma: float = 0.0):
        img_size = check_img_size(img_size)
        if pad is None:
            if oversample < 0:
                raise ValueError(f"oversample must be >= 0, got {oversample}")
            pad = int(oversample / 8.0 * img_size[1])
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        super().__init__(noise_model=make_noise(noise_sigma))
        self.pad = int(pad)
        self.x_shape = img_size
        self.y_shape = (img_size[0], img_size[1] + 2 * self.pad, img_size[2] + 2 * self.pad)

    def A(self, x: Tensor, **kw) -> Tensor:
        """Fourier magnitudes, (B, C, H + 2p, W + 2p), real, >= 0."""
        check_shape(x, self.x_shape, "x", type(self).__name__)
        p = self.pad
        return torch.fft.fft2(F.pad(x, (p, p, p, p)), norm="ortho").abs()


@register("phase_retrieval", "Fourier phase retrieval |F(pad(x))|, oversample 2 as in DPS/DAPS")
def _phase_retrieval(img_size: ImgSize = (3, 256, 256), oversample: float = 2.0,
                     noise_sigma: float = 0.0) -> FourierPhaseRetrieval:
    return FourierPhaseRetrieval(img_size, oversample, noise_sigma=noise_sigma)
