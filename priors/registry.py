"""Registry of named priors: ``load(name, **kw)`` and ``available()``.

Shipped priors need no download; loaders for public checkpoints take a local ``path``.
"""

from __future__ import annotations

from invsolve.registry import Registry

from .base import Prior

_PRIORS: Registry[Prior] = Registry("prior")
register = _PRIORS.register
available = _PRIORS.available


def load(name: str, precision: str | None = None, **kw) -> Prior:
    """The prior registered as ``name``, built with ``kw`` (e.g. ``device``, ``dtype``, ``path``).

    ``precision`` ("bf16"; "fp16" on CUDA) runs a network prior's network under autocast while the
    solver's state and the conversions keep their dtype (``NetworkPrior.set_precision``).
    """
    prior = _PRIORS.build(name, **kw)
    if precision is not None:
        if not hasattr(prior, "set_precision"):
            raise ValueError(f"prior {name!r} is not a network prior; precision applies to networks only")
        prior.set_precision(precision)
    return prior
