"""Registry of named forward operators: ``build(name, **kw)`` and ``available()``.

Each entry is a factory returning a ``deepinv.physics.Physics``. Names are short and stable: configs,
experiments and the CLI refer to them.
"""

from __future__ import annotations

from deepinv.physics import Physics

from invsolve.registry import Registry

_OPERATORS: Registry[Physics] = Registry("operator")
register = _OPERATORS.register
build = _OPERATORS.build
available = _OPERATORS.available
