"""Registry of named priors: ``load(name, **kw)`` and ``available()``.

Shipped priors need no download; loaders for public checkpoints take a local ``path``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Prior

_REGISTRY: dict[str, tuple[Callable[..., Prior], str]] = {}


def register(name: str, description: str) -> Callable[[Callable[..., Prior]], Callable[..., Prior]]:
    """Decorator registering a prior factory under ``name`` with a one-line ``description``."""

    def deco(factory: Callable[..., Prior]) -> Callable[..., Prior]:
        if name in _REGISTRY:
            raise ValueError(f"prior {name!r} is registered twice")
        _REGISTRY[name] = (factory, description)
        return factory

    return deco


def load(name: str, **kw: Any) -> Prior:
    """Build the prior registered as ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown prior {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name][0](**kw)


def available() -> dict[str, str]:
    """Registered prior names mapped to one-line descriptions."""
    return {k: v[1] for k, v in sorted(_REGISTRY.items())}
