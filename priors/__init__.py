"""Priors: one denoiser interface (``Prior.denoise(x, sigma)``) for analytic and network priors."""

from .base import Prior
from .gmm import GaussianMixture, mcgdiff_mixture
from .hub import (  # registers the hub priors
    from_diffusers,
    from_edm,
    from_flow,
    from_guided_diffusion,
)
from .network import DenoiserPrior, NetworkPrior, from_module
from .registry import available, load, register
from .unet import EDMPrecond, UNet, load_prior


@register("gmm", "25-component Gaussian mixture of the MCGdiff benchmark (exact); dim=8, seed=0")
def _gmm(dim: int = 8, seed: int = 0) -> GaussianMixture:
    return mcgdiff_mixture(dim, seed=seed)


__all__ = [
    "DenoiserPrior",
    "EDMPrecond",
    "GaussianMixture",
    "NetworkPrior",
    "Prior",
    "UNet",
    "available",
    "from_diffusers",
    "from_edm",
    "from_flow",
    "from_guided_diffusion",
    "from_module",
    "load",
    "load_prior",
    "mcgdiff_mixture",
    "register",
]
