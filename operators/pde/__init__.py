"""PDE forward maps, all ``deepinv.physics.Physics`` and registered in ``invsolve.operators``:

``darcy`` / ``darcy_sensors`` (Darcy flow, adjoint-state gradients), ``navier_stokes`` (2-D vorticity,
pseudo-spectral), ``poisson`` and ``helmholtz`` (linear, with exact adjoints).
"""

from .darcy import Darcy, darcy_solve
from .linear import Helmholtz, Poisson
from .navier_stokes import NavierStokes, NSSolver

__all__ = ["Darcy", "Helmholtz", "NSSolver", "NavierStokes", "Poisson", "darcy_solve"]
