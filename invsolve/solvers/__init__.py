"""Posterior solvers, one file per method; ``get(name)``, ``available()``."""

from .base import CountingPrior, Result, Solver
from .registry import available, get, register

# Importing the modules registers the solvers.
from . import daps, ddim, ddrm, dflow, diffpir, dps, flowchef, mcg, ot_ode, pigdm, pnp_flow, reddiff  # noqa: F401  isort: skip
from . import mcgdiff, pinv, tds  # noqa: F401  isort: skip

__all__ = ["CountingPrior", "Result", "Solver", "available", "get", "register"]
