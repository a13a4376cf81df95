"""What the benchmarks share: the machine they ran on, timing, tables, and where results go.

Every benchmark states the machine (CPU model, threads, torch / deepinv versions, load average at
start and end) in its JSON, and measures each ratio side by side in one run, interleaving the
things compared so that background load hits both equally.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(threads: int | None = None) -> dict[str, Any]:
    """The machine as a JSON-able dict; sets torch's thread count when ``threads`` is given."""
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        import deepinv

        dinv = deepinv.__version__
    except ImportError:  # pragma: no cover
        dinv = None
    info = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__,
            "deepinv": dinv, "python": platform.python_version(), "load_avg_start": os.getloadavg(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    return info


def describe(info: dict[str, Any]) -> str:
    load = info.get("load_avg_start")
    return (f"{info['cpu']}, {info['torch_threads']} torch thread(s) of {info['logical_cpus']} logical CPUs, "
            f"torch {info['torch']}, deepinv {info['deepinv']}, load average at start "
            f"{load[0]:.2f} (1 min)" + (f", GPU {info['cuda']}" if info.get("cuda") else ""))


def write(name: str, info: dict[str, Any], payload: dict[str, Any]) -> Path:
    """benchmarks/results/<name>.json with the machine (load average at end added) and payload."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = {**info, "load_avg_end": os.getloadavg(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({"machine": info, **payload}, indent=1, default=str) + "\n")
    return out


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_time(fn: Callable[[], Any], reps: int = 3) -> float:
    return statistics.median(timed(fn) for _ in range(reps))


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table; floats printed with 3 significant digits."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-sample PSNR in dB of x clipped to [0, data_range] against ref."""
    mse = (x.real.clamp(0, data_range) - ref).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)
