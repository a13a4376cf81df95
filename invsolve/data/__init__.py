"""Offline data sets and simulators: Gaussian random fields, Darcy pairs, Navier-Stokes trajectories.

Generators are seeded per sample (sample i of a set with seed s draws from its own generator, seeded
by a hash of (s, i)), so a set does not depend on batching, and a larger set extends a smaller one with
the same seed. ``load_or_generate`` caches a set on disk with its parameters and regenerates it when
they change. CLI: ``invsolve data darcy|ns ...`` (``invsolve.data.cli``).
"""

from .cache import load_or_generate
from .darcy import darcy_dataset, darcy_permeability, generate_darcy
from .grf import grf_neumann, grf_periodic
from .ns import generate_ns, ns_dataset

__all__ = ["darcy_dataset", "darcy_permeability", "generate_darcy", "generate_ns", "grf_neumann", "grf_periodic",
           "load_or_generate", "ns_dataset"]
