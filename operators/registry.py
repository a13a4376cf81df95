"""Registry of named forward operators: ``build(name, **kw)`` and ``available()``.

Each entry is a factory returning a ``deepinv.physics.Physics``. Names are short and stable: configs,
experiments and the CLI refer to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deepinv.physics import Physics

_REGISTRY: dict[str, tuple[Callable[..., Physics], str]] = {}


def register(name: str, description: str) -> Callable[[Callable[..., Physics]], Callable[..., Physics]]:
    """Decorator registering ``factory`` under ``name`` with a one-line ``description``."""

    def deco(factory: Callable[..., Physics]) -> Callable[..., Physics]:
        if name in _REGISTRY:
            raise ValueError(f"operator {name!r} is registered twice")
        _REGISTRY[name] = (factory, description)
        return factory

    return deco


def build(name: str, **kw: Any) -> Physics:
    """Build the operator registered as ``name`` with keyword arguments ``kw``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown operator {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name][0](**kw)


def available() -> dict[str, str]:
    """Registered operator names mapped to their one-line descriptions."""
    return {k: v[1] for k, v in sorted(_REGISTRY.items())}
