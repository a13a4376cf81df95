"""Registry of named priors: ``load(name, **kw)`` and ``available()``.

Shipped priors need no download; loaders for public checkpoints take a local ``path``.
"""

from __future__ import annotations

from invsolve.registry import Registry

from .base import Prior

_PRIORS: Registry[Prior] = Registry("prior")
register = _PRIORS.register
load = _PRIORS.build
available = _PRIORS.available
