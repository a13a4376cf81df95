"""The batched, resumable, shardable evaluation runner: ``invsolve.evaluate(config)``.

``invsolve evaluate CONFIG.yaml --out DIR`` (one process) and
``torchrun --nproc_per_node N -m invsolve.evaluate CONFIG.yaml --out DIR`` (N processes, gloo on CPU,
nccl on GPU) run every (sample, configuration) of the config's grids that ``DIR/results.jsonl`` does
not hold yet, append one row per sample as soon as it exists (flushed and fsynced), then rebuild
``DIR/table.md`` and ``DIR/grid.png`` from the rows and write ``DIR/config.yaml`` and ``DIR/env.json``.

Sharding: every rank reads the rows already present, then owns every world_size-th pending key (a
disjoint set), writes ``DIR/results.rank<r>.jsonl``; after a barrier rank 0 merges the rank files into
``results.jsonl``. Per-sample seeds derive from (config seed, item id), so the merged rows equal one
process's (exactly in float64 up to BLAS rounding, ~1e-15; timing fields aside).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

import invsolve
from invsolve import operators, priors

from . import report
from .config import EvalConfig, dump_config, load_config
from .gmm import make_case
from .metrics import LPIPS, psnr_per_sample, relative_l2, sliced_wasserstein, ssim_per_sample
from .plan import Cell, Plan, derive_seed, make_plan
from .rows import RowWriter, canonical, close_rows, key_id, latest_by_key, read_rows

RESULTS = "results.jsonl"
FAILURES = (FloatingPointError, ValueError)
"""Exceptions of a solver that become failed rows (divergence guard; a solver that cannot handle the
problem). Anything else stops the run."""


# --- processes, threads, devices -------------------------------------------------------------------
def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(world_size: int, threads: int | None = None) -> int:
    """torch threads per process: ``threads`` if given; else OMP_NUM_THREADS when the user set it
    (torch already read it; note that torchrun sets it to 1 when it is unset); else
    max(1, cores // world_size) so that N processes do not oversubscribe the cores."""
    if threads is not None:
        torch.set_num_threads(threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, _cores() // world_size))
    return torch.get_num_threads()


class _Dist:
    """Rank, world size and barriers; initialises torch.distributed when launched by torchrun."""

    def __init__(self, device: str):
        import torch.distributed as dist

        self.dist, self.created = dist, False
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        elif world > 1:
            backend = "nccl" if device == "cuda" else "gloo"
            # long timeout: the final barrier waits for the slowest rank's share of the grid
            dist.init_process_group(backend, timeout=timedelta(hours=48))
            self.rank, self.world, self.created = dist.get_rank(), dist.get_world_size(), True
        else:
            self.rank, self.world = 0, 1
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    def barrier(self) -> None:
        if self.world > 1:
            if self.dist.get_backend() == "nccl":
                self.dist.barrier(device_ids=[self.local_rank])
            else:
                self.dist.barrier()

    def close(self) -> None:
        if self.created:
            self.dist.destroy_process_group()


def _device(config: EvalConfig, dist: _Dist) -> torch.device:
    if config.device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: cuda was asked for but CUDA is not available here; use device: cpu")
        torch.cuda.set_device(dist.local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def environment(device: torch.device, world: int) -> dict:
    """Versions and hardware of this run (DIR/env.json)."""
    import deepinv
    import numpy

    env = {"invsolve": invsolve.__version__, "torch": torch.__version__, "deepinv": deepinv.__version__,
           "numpy": numpy.__version__, "python": platform.python_version(), "platform": platform.platform(),
           "device": str(device), "threads": torch.get_num_threads(), "cores": _cores(),
           "world_size": world, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    for mod in ("kornia", "pydantic", "yaml", "torchmetrics"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


def weights_id(prior) -> str | None:
    """A fingerprint of a prior's weights: sha1 (16 hex digits) of its state dict in float32 on the
    CPU, so the same weights give the same id on any device or dtype. Each row records it and a rerun
    replaces rows made with other weights under the same prior name (a retrained or replaced
    checkpoint). None for priors that hold no tensors."""
    if not isinstance(prior, torch.nn.Module):
        return None
    state = prior.state_dict()
    if not state:
        return None
    h = hashlib.sha1()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# --- one batch --------------------------------------------------------------------------------------
class _Runner:
    """Builds operators and priors once, runs batches of one cell and writes their rows."""

    def __init__(self, plan: Plan, out: Path, device: torch.device, writer: RowWriter, rank: int,
                 world: int):
        self.plan, self.config, self.out = plan, plan.config, out
        self.device, self.writer, self.rank, self.world = device, writer, rank, world
        self.dtype = getattr(torch, self.config.dtype)
        self._ops: dict[str, object] = {}
        self._priors: dict[str, object] = {}
        self._weights: dict[str, str | None] = {}
        self._cases: dict[str, object] = {}
        self.lpips, self.lpips_reason = None, ("no local backbone weights: set lpips_backbone to "
                                               "torchvision's AlexNet weights file (never downloaded)")
        if self.config.lpips_backbone:
            self.lpips, self.lpips_reason = LPIPS(self.config.lpips_backbone, device), None

    # building blocks, cached by their key text
    def operator(self, cell: Cell):
        k = canonical([cell.base["operator"], cell.base["noise_sigma"]])
        if k not in self._ops:
            kw = cell.base["operator"]["kwargs"]
            try:
                op = operators.build(cell.operator.name, noise_sigma=cell.operator.noise_sigma, **kw)
            except TypeError as err:  # a keyword the factory does not take
                raise ValueError(f"operator {cell.operator.name} rejects its arguments {sorted(kw)} "
                                 f"({err}); PDE operators take 'size' in kwargs instead of img_size") from err
            self._ops[k] = op.to(self.device)
        return self._ops[k]

    def prior(self, cell: Cell):
        k = canonical(cell.base["prior"])
        if k not in self._priors:
            try:
                prior = priors.load(cell.prior.name, **cell.prior.kwargs)
            except TypeError as err:
                raise ValueError(f"prior {cell.prior.name} rejects its arguments "
                                 f"{sorted(cell.prior.kwargs)} ({err})") from err
            self._priors[k] = prior.to(device=self.device, dtype=self.dtype).eval()
        return self._priors[k]

    def weights(self, cell: Cell) -> str | None:
        """``weights_id`` of the cell's prior, computed once per prior; None for mixture cells and
        classical baselines (pinv, tv, fbp, ...), which do not use the prior."""
        if cell.prior is None or invsolve.solvers.get(cell.solver.name).baseline:
            return None
        k = canonical(cell.base["prior"])
        if k not in self._weights:
            self._weights[k] = weights_id(self.prior(cell))
        return self._weights[k]

    def current(self, cell: Cell, row: dict | None) -> bool:
        """Whether ``row`` holds this cell's result: it exists and was made with the prior's present
        weights (rows from before the fingerprint was recorded are taken as they are)."""
        if row is None:
            return False
        made_with = row.get("prior_weights")
        return made_with is None or made_with == self.weights(cell)

    def prepare(self, cells: list[Cell]) -> None:
        """Build every operator and prior the cells need, so config mistakes stop the run at once."""
        for c in cells:
            if c.operator is not None:
                self.operator(c)
                self.prior(c)

    def solve(self, cell: Cell, problem, prior, seeds: list[int]) -> tuple[object, str | None, list[str]]:
        """(result or None, error text or None, warnings) of one batched solve; warnings go into the
        rows instead of flooding the terminal once per batch."""
        kw = dict(cell.solver.hp)
        if cell.solver.steps is not None:
            kw["steps"] = cell.solver.steps
        if cell.solver.preset is not None:
            kw["preset"] = cell.solver.preset
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res, error = invsolve.solve(problem, prior, cell.solver.name, seed=seeds, **kw), None
            except FAILURES as err:
                res, error = None, f"{type(err).__name__}: {err}"
        return res, error, list(dict.fromkeys(str(w.message) for w in caught))

    def _row(self, cell: Cell, item: int, metrics: dict, unavailable: dict, nfe: int | None,
             error: str | None, batch_seconds: float, batch_size: int, images: dict | None) -> dict:
        key = cell.key(item)
        return {"key": key, "key_id": key_id(key), "labels": cell.labels(), "metrics": metrics,
                "unavailable": unavailable, "nfe": nfe, "error": error,
                "seconds": batch_seconds / batch_size, "batch_seconds": batch_seconds,
                "batch_size": batch_size, "prior_weights": self.weights(cell), "rank": self.rank,
                "world_size": self.world,
                "device": str(self.device), "finished": time.time(), **({"images": images} if images else {})}

    def _save(self, name: str, t: Tensor) -> str:
        rel = f"images/{name}.pt"
        path = self.out / rel
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(t.detach().float().cpu().clone(), tmp)
        os.replace(tmp, path)  # atomic: a row never points at a half-written file
        return rel

    # image / field cells
    def run_images(self, cell: Cell, items: list[int]) -> None:
        data, seed = cell.data, self.config.seed
        x = data.x[items].to(device=self.device, dtype=self.dtype)
        op, prior = self.operator(cell), self.prior(cell)
        noise_seeds = [derive_seed(seed, data.ids[i], "noise") for i in items]
        k = cell.solver.samples
        # chain 0 of an item uses the single-sample stream, so its first sample is the one-sample row's
        solver_seeds = [derive_seed(seed, data.ids[i], "solver" if j == 0 else f"solver{j}")
                        for i in items for j in range(k)]
        problem = invsolve.Problem.simulate(op, x, seed=noise_seeds)
        start = time.perf_counter()
        res, error, warned = self.solve(cell, problem.repeat(k) if k > 1 else problem, prior, solver_seeds)
        seconds = time.perf_counter() - start
        if res is not None and k > 1:  # the posterior-mean estimate of each item
            res = dataclasses.replace(res, x=res.x.unflatten(0, (len(items), k)).mean(1))
        values, unavailable = ({}, {}) if res is None else self.image_metrics(cell, res.x, x)
        for j, i in enumerate(items):
            images = None
            if i < self.config.figure_items:
                images = self.figure_images(cell, i, x[j], problem.y[j:j + 1], op,
                                            None if res is None else res.x[j])
            metrics = {m: (None if res is None else values.get(m, [None] * len(items))[j])
                       for m in cell.metrics}
            row = self._row(cell, i, metrics, unavailable, None if res is None else res.nfe, error,
                            seconds, len(items), images)
            self.writer.write({**row, "warnings": warned} if warned else row)

    def image_metrics(self, cell: Cell, x_hat: Tensor, x: Tensor) -> tuple[dict, dict]:
        rng, values, unavailable = cell.data.data_range, {}, {}
        for m in cell.metrics:
            if m == "psnr":
                values[m] = psnr_per_sample(x_hat, x, rng).tolist()
            elif m == "ssim":
                values[m] = ssim_per_sample(x_hat, x, rng).tolist()
            elif m == "rel_l2":
                values[m] = relative_l2(x_hat, x).tolist()
            elif m == "lpips":
                if self.lpips is None:
                    unavailable[m] = self.lpips_reason
                    continue
                try:
                    values[m] = self.lpips(x_hat, x, rng).tolist()
                except ValueError as err:  # grey images, images too small for AlexNet
                    unavailable[m] = str(err)
        return values, unavailable

    def figure_images(self, cell: Cell, item: int, x: Tensor, y: Tensor, op, x_hat: Tensor | None) -> dict:
        base = {k: cell.base[k] for k in ("operator", "noise_sigma", "seed", "dtype")}
        truth_id = key_id({"item": cell.data.ids[item], "truth": True})
        meas_id = key_id({**base, "item": cell.data.ids[item], "measurement": True})
        images = {"truth": self._save(truth_id, x)}
        m, kind = report.measurement_image(op, y, tuple(x.shape), cell.data.data_range)
        images["measurement"] = None if m is None else self._save(meas_id, m[0])
        images["measurement_kind"] = kind
        if x_hat is not None:
            images["x_hat"] = self._save(key_id(cell.key(item)), x_hat)
        return images

    # mixture cells: one row per problem
    def case(self, cell: Cell, item: int):
        item_id = cell.data.ids[item]
        if item_id not in self._cases:
            spec = cell.data.spec
            # problem_seed: the item number in the test split, offset in the validation split
            self._cases = {item_id: make_case(spec.dim, spec.dim_y, spec.problem_seed(item),
                                              sigma_y=spec.sigma_y, dtype=self.dtype)}  # keep one
        return self._cases[item_id]

    def run_gmm(self, cell: Cell, item: int) -> None:
        spec, seed, item_id = cell.data.spec, self.config.seed, cell.data.ids[item]
        case = self.case(cell, item)
        reference = case.posterior.sample(spec.samples, seed=derive_seed(seed, item_id, "reference"))
        sw_seed = derive_seed(seed, item_id, "directions")
        start, nfe, error, warned = time.perf_counter(), 0, None, []
        if cell.reference == "floor":
            samples = case.posterior.sample(spec.samples, seed=derive_seed(seed, item_id, "floor"))
        elif cell.reference == "prior":
            samples = case.prior.sample(spec.samples, seed=derive_seed(seed, item_id, "prior"))
        else:
            chains = [derive_seed(seed, item_id, f"chain{j}") for j in range(spec.samples)]
            problem = case.problem.repeat(spec.samples).to(self.device)
            res, error, warned = self.solve(cell, problem, case.prior.to(self.device), chains)
            samples, nfe = (None, None) if res is None else (res.x, res.nfe)
        sw = None if samples is None else sliced_wasserstein(samples, reference, spec.n_directions,
                                                              seed=sw_seed)
        seconds = time.perf_counter() - start
        extra = {"sigma_y": case.sigma_y, **({"warnings": warned} if warned else {})}
        row = self._row(cell, item, {"sw": sw}, {}, nfe, error, seconds, 1, None)
        self.writer.write({**row, **extra})


# --- the whole run ----------------------------------------------------------------------------------
def _shards(out: Path) -> list[Path]:
    return sorted(out.glob("results.rank*.jsonl"))


def load_rows(out: Path) -> list[dict]:
    """The rows of ``DIR/results.jsonl`` followed by those of unmerged rank files."""
    rows = read_rows(out / RESULTS)
    for shard in _shards(out):
        rows += read_rows(shard)
    return rows


def merge_shards(out: Path) -> int:
    """Append the rows of ``results.rank*.jsonl`` that ``results.jsonl`` lacks (or holds in an older
    form), fsync, then delete the rank files. Idempotent: safe to rerun after a crash. Returns the
    number of rows appended."""
    main = out / RESULTS
    have = latest_by_key(read_rows(main))
    added = 0
    with RowWriter(main) as writer:
        for shard in _shards(out):
            for row in read_rows(shard):
                k = canonical(row["key"])
                if k not in have or not close_rows(have[k], row, rel=0.0):
                    writer.write(row)
                    have[k] = row
                    added += 1
    for shard in _shards(out):
        shard.unlink()
    return added


def _write_meta(config: EvalConfig, source: str | Path | dict | EvalConfig, out: Path,
                device: torch.device, world: int) -> None:
    text = Path(source).read_text() if isinstance(source, (str, Path)) else dump_config(config)
    (out / "config.yaml").write_text(text)
    (out / "env.json").write_text(json.dumps(environment(device, world), indent=2) + "\n")


def evaluate(config: str | Path | dict | EvalConfig, out: str | Path | None = None, *,
             table_only: bool = False, retry_failed: bool = False, progress: bool = True) -> Path:
    """Run an evaluation grid and write its rows, table and figure; returns the output folder.

    Args:
        config: a YAML file, a dict, or an ``EvalConfig`` (see ``invsolve.evaluation.config``).
        out: output folder (default ``results/<config name>``); rows already in it are skipped.
        table_only: run nothing; rebuild ``table.md`` and ``grid.png`` from the rows.
        retry_failed: run again the keys whose rows record a failure (their new rows replace them).
        progress: tqdm bar over this process's samples.

    Under torchrun (WORLD_SIZE > 1) each rank runs its share and rank 0 merges and reports.
    """
    source, config = config, load_config(config)
    out = Path(out) if out is not None else Path("results") / config.name
    plan = make_plan(config)
    if table_only:
        rows = latest_by_key(load_rows(out))
        report.write_reports(plan, rows, out)
        return out
    dist = _Dist(config.device)
    try:
        set_threads(dist.world, config.threads)
        device = _device(config, dist)
        out.mkdir(parents=True, exist_ok=True)
        done = latest_by_key(load_rows(out))
        if retry_failed:
            done = {k: r for k, r in done.items() if not r.get("error")}
        dist.barrier()  # every rank has read the same rows before anyone appends
        runner = _Runner(plan, out, device, None, dist.rank, dist.world)
        pending = [t for t in plan.tasks() if not runner.current(plan.cells[t[0]], done.get(canonical(plan.key(t))))]
        mine = pending[dist.rank::dist.world]
        if dist.rank == 0:
            _write_meta(config, source, out, device, dist.world)
        path = out / (RESULTS if dist.world == 1 else f"results.rank{dist.rank}.jsonl")
        with RowWriter(path) as writer:
            runner.writer = writer
            # every rank builds what any rank needs: a config mistake stops all ranks at once
            runner.prepare([plan.cells[c] for c in sorted({c for c, _ in pending})])
            _run_tasks(runner, plan, mine, progress, dist.rank)
        dist.barrier()
        if dist.rank == 0:
            merge_shards(out)
            report.write_reports(plan, latest_by_key(read_rows(out / RESULTS)), out)
        dist.barrier()
    finally:
        dist.close()
    return out


def _run_tasks(runner: _Runner, plan: Plan, tasks: list[tuple[int, int]], progress: bool,
               rank: int) -> None:
    by_cell: dict[int, list[int]] = {}
    for c, i in tasks:
        by_cell.setdefault(c, []).append(i)
    bar = tqdm(total=len(tasks), desc=f"evaluate (rank {rank})" if rank else "evaluate",
               disable=not progress, position=rank)
    with bar:
        for c, items in by_cell.items():
            cell = plan.cells[c]
            bar.set_postfix_str(" / ".join(cell.labels().values())[:80])
            if cell.data.is_gmm:
                for i in items:
                    runner.run_gmm(cell, i)
                    bar.update(1)
                continue
            for b in range(0, len(items), cell.batch_size):
                batch = items[b:b + cell.batch_size]
                runner.run_images(cell, batch)
                bar.update(len(batch))


# --- command line -----------------------------------------------------------------------------------
def build_parser(prog: str = "invsolve evaluate") -> argparse.ArgumentParser:
    """Arguments of ``invsolve evaluate`` and ``python -m invsolve.evaluate``."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="YAML config (see experiments/configs/quick.yaml)")
    ap.add_argument("--out", default=None, help="output folder (default results/<config name>)")
    ap.add_argument("--table-only", action="store_true",
                    help="run nothing: rebuild table.md and grid.png from the rows in --out")
    ap.add_argument("--retry-failed", action="store_true",
                    help="run again the keys whose rows record a failure (divergence, unsupported operator)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``invsolve evaluate`` and ``python -m invsolve.evaluate`` (torchrun)."""
    args = build_parser().parse_args(argv)
    try:
        out = evaluate(args.config, args.out, table_only=args.table_only, retry_failed=args.retry_failed,
                       progress=not args.no_progress)
    except ValueError as err:
        print(f"invsolve evaluate: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print((out / "table.md").read_text())
        print(f"rows: {out / RESULTS}\ntable: {out / 'table.md'}\nfigure: {out / 'grid.png'}")
    return 0
