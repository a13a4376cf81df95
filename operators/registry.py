"""Registry of named forward operators: ``build(name, **kw)`` and ``available()``.

Each entry is a factory returning a ``deepinv.physics.Physics``. Names are short and stable: configs,
experiments and the CLI refer to them.
"""

from __future__ import annotations

from deepinv.physics import Physics

from invsolve.registry import Registry

_OPERATORS: Registry[Physics] = Registry("operator")
register = _OPERATORS.register
available = _OPERATORS.available


def build(name: str, **kw) -> Physics:
    """The operator registered as ``name``, built with ``kw``; ``op.task`` records the name (solver
    presets are keyed by it)."""
    op = _OPERATORS.build(name, **kw)
    op.task = name
    return op
