"""Solver registry: ``get(name)``, ``available()`` and the ``register`` class decorator."""

from __future__ import annotations

from .base import Solver

_SOLVERS: dict[str, type[Solver]] = {}


def register(cls: type[Solver]) -> type[Solver]:
    """Class decorator: register a Solver subclass under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a class attribute 'name'")
    if cls.name in _SOLVERS:
        raise ValueError(f"solver {cls.name!r} is registered twice")
    _SOLVERS[cls.name] = cls
    return cls


def get(name: str) -> type[Solver]:
    """The Solver class registered as ``name``."""
    if name not in _SOLVERS:
        raise ValueError(f"unknown solver {name!r}; available: {', '.join(sorted(_SOLVERS))}")
    return _SOLVERS[name]


def available(baselines: bool = True) -> dict[str, str]:
    """Registered solver names mapped to one-line descriptions; ``baselines=False`` keeps only the
    solvers that use a prior (leaves out pinv, bicubic, tv, fbp, ...)."""
    return {k: v.description for k, v in sorted(_SOLVERS.items()) if baselines or not v.baseline}
