"""Posterior solvers, one file per method; ``get(name)``, ``available()``."""

from .base import CountingPrior, Result, Solver
from .registry import available, get, register

# Importing the modules registers the solvers.
from . import daps, ddim, ddrm, diffpir, dps, mcg, pigdm, reddiff  # noqa: F401  isort: skip

__all__ = ["CountingPrior", "Result", "Solver", "available", "get", "register"]
