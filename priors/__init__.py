"""Priors: one denoiser interface (``Prior.denoise(x, sigma)``) for analytic and network priors."""

from .base import Prior
from .gmm import GaussianMixture, mcgdiff_mixture
from .network import DenoiserPrior, NetworkPrior, from_module
from .registry import available, load, register


@register("gmm", "25-component Gaussian mixture of the MCGdiff benchmark (exact); dim=8, seed=0")
def _gmm(dim: int = 8, seed: int = 0) -> GaussianMixture:
    return mcgdiff_mixture(dim, seed=seed)


__all__ = [
    "DenoiserPrior",
    "GaussianMixture",
    "NetworkPrior",
    "Prior",
    "available",
    "from_module",
    "load",
    "mcgdiff_mixture",
    "register",
]
