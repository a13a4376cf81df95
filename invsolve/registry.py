"""A named registry of factories with one-line descriptions, shared by operators and priors.

Imports nothing of the project, so operators/ and priors/ can both use it without cycles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """``register(name, description)`` decorator, ``build(name, **kw)`` and ``available()``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, tuple[Callable[..., T], str]] = {}

    def register(self, name: str, description: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name`` with a one-line ``description``."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = (factory, description)
            return factory

        return deco

    def build(self, name: str, **kw: Any) -> T:
        """Call the factory registered as ``name`` with keyword arguments ``kw``."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._entries))}")
        return self._entries[name][0](**kw)

    def available(self) -> dict[str, str]:
        """Registered names mapped to their one-line descriptions."""
        return {k: v[1] for k, v in sorted(self._entries.items())}
