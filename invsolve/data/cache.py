"""Disk cache for generated data sets: the generator's parameters travel inside the file.

``.pt`` files hold ``{"params": dict, "data": {name: tensor}}``; ``.npz`` files hold the arrays plus a
``__params__`` JSON string. A cache is reused only if its stored parameters equal the requested ones;
otherwise (or if it is unreadable) the set is regenerated and the file overwritten.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FORMAT_VERSION = 1


def _canon(params: dict) -> str:
    return json.dumps({**params, "format_version": FORMAT_VERSION}, sort_keys=True, default=str)


def read_cache(path: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """(params, data) stored at ``path`` (.pt or .npz)."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            params = json.loads(str(z["__params__"]))
            data = {k: torch.from_numpy(z[k]) for k in z.files if k != "__params__"}
        return params, data
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return json.loads(blob["params"]), blob["data"]


def write_cache(path: str | Path, params: dict, data: dict[str, Tensor]) -> None:
    """Write ``data`` with ``params`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    if path.suffix not in (".pt", ".npz"):
        raise ValueError(f"cache files end in .pt or .npz, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    if path.suffix == ".npz":
        np.savez(tmp, __params__=np.array(_canon(params)), **{k: v.numpy() for k, v in data.items()})
    else:
        torch.save({"params": _canon(params), "data": data}, tmp)
    os.replace(tmp, path)


def load_or_generate(path: str | Path | None, params: dict, generate: Callable[[], dict[str, Tensor]],
                     force: bool = False) -> tuple[dict[str, Tensor], bool]:
    """Load the set cached at ``path`` if it was made with ``params``, else ``generate()`` and save.

    Returns (data, from_cache). ``path=None`` generates without caching.
    """
    if path is not None and not force and Path(path).exists():
        try:
            stored, data = read_cache(path)
        except Exception:  # noqa: BLE001 -- any unreadable/truncated file is regenerated
            stored, data = None, None
        if stored is not None and json.dumps(stored, sort_keys=True) == _canon(params):
            return data, True
    data = generate()
    if path is not None:
        write_cache(path, params, data)
    return data, False
