"""Forward operators, all ``deepinv.physics.Physics``: ``build(name, **kw)``, ``available()``."""

from .matrix import Matrix
from .registry import available, build, register

__all__ = ["Matrix", "available", "build", "register"]
