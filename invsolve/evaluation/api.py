"""``invsolve.evaluate``: a light front for the runner, so that ``import invsolve`` does not load
pydantic, PyYAML and the report code until an evaluation actually runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def evaluate(config: str | os.PathLike | dict | Any, out: str | os.PathLike | None = None,
             **kwargs: Any) -> Path:
    """Run an evaluation grid (data x operator x prior x solver) and return its output folder.

    ``config``: a YAML file, a dict or an ``EvalConfig`` (format: ``invsolve.evaluation.config``).
    Rows are appended to ``out/results.jsonl`` as they exist (a rerun skips them), then ``table.md``
    and ``grid.png`` are rebuilt from the rows. Keyword arguments (``table_only``, ``retry_failed``,
    ``progress``): see ``invsolve.evaluation.runner.evaluate``.
    """
    from .runner import evaluate as run

    return run(config, out, **kwargs)
