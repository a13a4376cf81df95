"""Result rows: one JSON object per line, appended and fsynced as soon as it exists.

A row is ``{"key": {...}, <metrics>, <timing>}``; the key holds everything that determines the row,
and ``key_id`` (a hash of the canonical JSON of the key) names it. Timing fields (``TIMING``) vary
from run to run and are left out when rows are compared.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TIMING = ("seconds", "batch_seconds", "batch_size", "rank", "world_size", "device", "finished",
          "warnings")
"""Row fields that depend on the run, not on the key: wall time, batching, process, and the solvers'
warnings (they count events per batch)."""


def canonical(obj: Any) -> str:
    """The canonical JSON text of a key (sorted keys, no spaces): equal keys give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)


def key_id(key: dict) -> str:
    """A 16-hex-digit name for a key (file names of a row's images, ownership of shards)."""
    return hashlib.sha256(canonical(key).encode()).hexdigest()[:16]


def jsonable(value: Any) -> Any:
    """Hyperparameter values as JSON (tuples to lists); other types raise ValueError."""
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    raise ValueError(f"value {value!r} of type {type(value).__name__} cannot go into a row key; use "
                     "numbers, strings, booleans or lists of them")


def read_rows(path: Path) -> list[dict]:
    """All rows of a JSONL file (none when missing).

    A last line without its newline (a process killed while writing it) is cut off the file with a
    warning, so the next append starts on a clean line; a malformed line elsewhere raises ValueError.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        warnings.warn(f"{path}: dropping an incomplete last line ({len(data) - cut} bytes) left by an "
                      "interrupted run", stacklevel=2)
        with path.open("r+b") as fh:
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())
        data = data[:cut]
    rows = []
    for n, line in enumerate(data.decode().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {n} is not valid JSON ({err}); remove or repair it") from err
        if not isinstance(row, dict) or "key" not in row:
            raise ValueError(f"{path}, line {n} is not a result row (no 'key'); remove it")
        rows.append(row)
    return rows


class RowWriter:
    """Appends rows to a JSONL file, each one flushed and fsynced before ``write`` returns."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a")

    def write(self, row: dict) -> None:
        self._fh.write(json.dumps(row, allow_nan=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RowWriter:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def latest_by_key(rows: Iterable[dict]) -> dict[str, dict]:
    """Rows indexed by canonical key; a later row with the same key replaces an earlier one."""
    return {canonical(r["key"]): r for r in rows}


def comparable(row: dict) -> dict:
    """A row without its timing fields (for equality across runs)."""
    return {k: v for k, v in row.items() if k not in TIMING}


def close_rows(a: dict, b: dict, rel: float = 1e-9) -> bool:
    """Rows equal up to timing fields, floats within relative tolerance ``rel`` (NaN equals NaN)."""
    return _close(comparable(a), comparable(b), rel)


def _close(a: Any, b: Any, rel: float) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)) or isinstance(b, float) and isinstance(a, int):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rel, abs_tol=rel)
    return a == b
