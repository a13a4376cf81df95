"""``python -m invsolve.evaluate CONFIG.yaml --out DIR``: the module entry of the evaluation runner, so
that ``torchrun --nproc_per_node N -m invsolve.evaluate CONFIG.yaml --out DIR`` shards a grid.

``invsolve.evaluate`` is the *function* (exported by ``invsolve/__init__.py``); this module of the same
name only exists for ``-m``. The runner itself is ``invsolve.evaluation.runner``: import from there.
Should this module be imported anyway (``import invsolve.evaluate`` rebinds the package attribute
``invsolve.evaluate`` to the module), the module is callable and forwards to the function, so
``invsolve.evaluate(config, out)`` works either way.
"""

from __future__ import annotations

import sys
import types

from invsolve.evaluation.runner import evaluate, main


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return evaluate(*args, **kwargs)


if __name__ == "__main__":
    sys.exit(main())
else:
    sys.modules[__name__].__class__ = _CallableModule
