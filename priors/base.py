"""The canonical prior interface: a denoiser for every noise level.

``prior.denoise(x, sigma) = E[x0 | x0 + sigma * eps = x]`` with sigma of shape (B,), x in the
operator's units (images in [0, 1]). This is deepinv's ``Denoiser`` convention and the EDM / k-diffusion
one (Karras et al. 2022, arXiv 2206.00364, Eq. 2-3). Score, noise, and the x0 / velocity predictions on
any Gaussian path follow from it exactly (Tweedie: score = (D - x) / sigma^2), see ``invsolve.paths``.
"""

from __future__ import annotations

import torch
from deepinv.models import Denoiser
from torch import Tensor

from invsolve import paths as P


def as_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """Return sigma as a (B,) tensor with x's dtype and device (a scalar is repeated)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        return sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a scalar or of shape ({x.shape[0]},), got {tuple(sigma.shape)}")
    return sigma


class Prior(Denoiser):
    """Base class: implement ``denoise(x, sigma)``; everything else is derived from it.

    A prior is a deepinv ``Denoiser`` (``prior(x, sigma)``), so deepinv's own samplers (DDRM, DiffPIR,
    DPS) run with it; at sigma = 0 every prior returns x.

    What a prior knows about itself (class attributes, overridden by network priors):
        shape: event shape of one sample, e.g. (d,) or (C, H, W); None for fully convolutional priors.
        channels: number of channels it takes (images), or None if any.
        data_range: (lo, hi) of its data in operator units (e.g. (0, 1) for images), or None.
        sigma_range: (min, max) canonical noise levels it is valid for, in operator units, or None.
        data_scale, data_center: network units per operator unit, and the operator-unit value the
            network sees as 0 (1 and 0 for priors defined in operator units). Step sizes that papers
            state in the network's units (e.g. [-1, 1] images) are converted with ``data_scale``.
    """

    shape: tuple[int, ...] | None = None
    channels: int | None = None
    data_range: tuple[float, float] | None = None
    sigma_range: tuple[float, float] | None = None
    data_scale: float = 1.0
    data_center: float = 0.0

    def __init__(self) -> None:
        super().__init__()

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """E[x0 | x] for x = x0 + sigma * eps; x (B, ...), sigma (B,). Returns x's shape."""
        raise NotImplementedError

    def forward(self, x: Tensor, sigma: Tensor | float, **kwargs) -> Tensor:
        return self.denoise(x, as_sigma(sigma, x))

    def native_path(self) -> P.Path | None:
        """The path the prior was trained on, in operator units (``paths.ScaledPath``), or None when
        the prior has no native discretisation (analytic priors, plain denoisers)."""
        return None

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """grad_x log p_sigma(x) = (D(x, sigma) - x) / sigma^2 (Tweedie's formula)."""
        sigma = as_sigma(sigma, x)
        return (self.denoise(x, sigma) - x) / P.bcast(sigma, x) ** 2

    def eps(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """The noise estimate (x - D(x, sigma)) / sigma."""
        sigma = as_sigma(sigma, x)
        return (x - self.denoise(x, sigma)) / P.bcast(sigma, x)

    def x0_at(self, x_t: Tensor, t: Tensor | float, path: P.Path | str) -> Tensor:
        """E[x0 | x_t] for x_t = alpha_t x0 + sigma_t eps on ``path`` at time t (scalar or (B,))."""
        path = P.get_path(path)
        t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)
        t = t.expand(x_t.shape[0]) if t.ndim == 0 else t
        alpha = path.alpha(t)
        return self.denoise(x_t / P.bcast(alpha, x_t), path.sigma_canon(t))

    def velocity_at(self, x_t: Tensor, t: Tensor | float, path: P.Path | str = "flow") -> Tensor:
        """The marginal velocity d x_t / dt = E[alpha'_t x0 + sigma'_t eps | x_t] on ``path``."""
        path = P.get_path(path)
        return P.from_x0(self.x0_at(x_t, t, path), "velocity", x_t, t, path)

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """Exact samples, where the prior can draw them (analytic priors); (n, *shape)."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot sample exactly; use invsolve.solve(problem, prior, 'ddim')"
        )
