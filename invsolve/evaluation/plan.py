"""The plan of an evaluation: its cells (data x operator x prior x solver) and every row key.

Planning loads the data sets (for item ids and shapes) and resolves hyperparameters, but builds no
operator and loads no prior, so ``--table-only`` stays cheap. A key holds everything that determines
its row: the data item, the operator (name, keyword arguments including the image size), the noise
level, the prior (name, keyword arguments), the solver (name and its resolved hyperparameters, or the
preset and the explicit overrides), the config seed and the dtype. The device and the batch size are
not part of it: per-sample seeds make rows independent of batching (exactly up to float rounding).
Metrics are not part of it either: they are computed when the row is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

from invsolve import solvers

from .config import EvalConfig, GridSpec, OperatorSpec, PriorSpec, SolverSpec
from .data import Dataset, load_dataset
from .rows import canonical, jsonable

REFERENCES = {"floor": "exact posterior (floor)", "prior": "prior samples (ignore y)"}
"""Reference rows of a mixture cell: a second exact posterior sample set, and exact prior samples."""


def derive_seed(seed: int, item: str, stream: str) -> int:
    """A seed in [0, 2**31) from (config seed, data item id, stream name), by SHA-256.

    Streams: "noise" (the measurement), "solver" (the solver's per-sample generator), and for the
    mixture "chain<j>", "reference", "floor", "prior", "directions". The same item gets the same seeds
    in any batch, shard or run.
    """
    digest = hashlib.sha256(f"{seed}|{item}|{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def solver_key(spec: SolverSpec, task: str | None) -> dict:
    """The solver part of a key: name and resolved hyperparameters (the dataclass defaults, then the
    preset's values for ``task`` (the operator's registry name) if a preset is set, then the config's
    explicit values), and the preset's name."""
    cls = solvers.get(spec.name)
    hp = {}
    for f in dataclasses.fields(cls):
        if f.name == "progress":
            continue
        if f.default is not dataclasses.MISSING:
            hp[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            hp[f.name] = f.default_factory()
    key = {"name": spec.name}
    if spec.preset is not None:
        if not hasattr(cls, "preset_values"):
            raise ValueError(f"the config sets a preset for {spec.name}, but this invsolve has no solver "
                             "presets; remove 'preset' or update invsolve")
        hp.update(cls.preset_values(spec.preset, task))
        key["preset"] = spec.preset
    hp.update(spec.hp)
    if spec.steps is not None:
        hp["steps"] = spec.steps
    for name, value in getattr(cls, "key_neutral", {}).items():
        if name in hp and hp[name] == value:
            del hp[name]
    key["hp"] = jsonable(hp)
    if spec.samples > 1:  # absent for one sample, so single-sample keys stay as they were
        key["samples"] = spec.samples
    return key


def default_metrics(data: Dataset) -> tuple[str, ...]:
    """Metrics of a grid that names none: sw for the mixture; rel. L2 and PSNR for Darcy fields;
    PSNR, SSIM, rel. L2 for images, and LPIPS for RGB images."""
    if data.is_gmm:
        return ("sw",)
    if data.size_arg == "size":
        return ("rel_l2", "psnr")
    if data.x.shape[1] == 3:
        return ("psnr", "ssim", "rel_l2", "lpips")
    return ("psnr", "ssim", "rel_l2")


@dataclass
class Cell:
    """One (data, operator, prior, solver) combination of a grid. For the mixture, ``operator`` and
    ``prior`` are None and ``reference`` names a reference row kind instead of a solver, if any."""

    grid: int
    data: Dataset
    operator: OperatorSpec | None
    prior: PriorSpec | None
    solver: SolverSpec | None
    reference: str | None
    metrics: tuple[str, ...]
    batch_size: int
    base: dict = field(repr=False)

    def key(self, item: int) -> dict:
        """The key of this cell's row for data item number ``item``."""
        return {**self.base, "item": self.data.ids[item]}

    def labels(self) -> dict[str, str]:
        """Display names (table rows, figure columns)."""
        return {"data": self.data.label,
                "operator": self.operator.display() if self.operator else "gmm case",
                "prior": self.prior.display() if self.prior else "gmm case",
                "solver": REFERENCES[self.reference] if self.reference else self.solver.display()}

    @property
    def group(self) -> tuple:
        """Cells sharing data, operator and prior (one block of the table, one figure panel)."""
        op = canonical(self.base.get("operator"))
        return (self.grid, op, self.base.get("noise_sigma"), canonical(self.base.get("prior")))


@dataclass
class Plan:
    """All cells, and the (cell, item) tasks in a fixed order."""

    config: EvalConfig
    datasets: list[Dataset]
    cells: list[Cell]

    def tasks(self) -> list[tuple[int, int]]:
        return [(c, i) for c, cell in enumerate(self.cells) for i in range(len(cell.data.ids))]

    def key(self, task: tuple[int, int]) -> dict:
        return self.cells[task[0]].key(task[1])


def _operator_key(spec: OperatorSpec, data: Dataset) -> dict:
    kwargs = dict(spec.kwargs)
    if "noise_sigma" in kwargs:
        raise ValueError(f"operator {spec.name}: give noise_sigma as the operator's own key, not in kwargs")
    if "img_size" not in kwargs and "size" not in kwargs:
        kwargs.update(data.shape_kwargs())
    return {"name": spec.name, "kwargs": jsonable(kwargs)}


def _grid_cells(g: int, grid: GridSpec, data: Dataset, config: EvalConfig) -> list[Cell]:
    metrics = tuple(grid.metrics) if grid.metrics else default_metrics(data)
    bs = grid.batch_size or config.batch_size
    common = {"seed": config.seed, "dtype": config.dtype}
    cells = []
    if data.is_gmm:
        spec = data.spec
        base = {**common, "operator": {"name": "gmm-case"}, "prior": {"name": "gmm-case"},
                "samples": spec.samples, "n_directions": spec.n_directions}
        for ref in REFERENCES:
            cells.append(Cell(g, data, None, None, None, ref, metrics, 1,
                              {**base, "solver": {"name": f"reference:{ref}"}}))
        for s in grid.solvers:
            cells.append(Cell(g, data, None, None, s, None, metrics, 1,
                              {**base, "solver": solver_key(s, None)}))
        return cells
    for op in grid.operators:
        op_key = _operator_key(op, data)
        for pr in grid.priors:
            pr_key = {"name": pr.name, "kwargs": jsonable(pr.kwargs)}
            for s in grid.solvers:
                base = {**common, "data_range": list(data.data_range), "operator": op_key,
                        "noise_sigma": op.noise_sigma, "prior": pr_key, "solver": solver_key(s, op.name)}
                cells.append(Cell(g, data, op, pr, s, None, metrics, bs, base))
    return cells


def make_plan(config: EvalConfig) -> Plan:
    """Load the data sets and lay out every cell and key of ``config``."""
    datasets = [load_dataset(grid.data) for grid in config.grids]
    cells = []
    for g, (grid, data) in enumerate(zip(config.grids, datasets)):
        cells += _grid_cells(g, grid, data, config)
    keys = [canonical(c.key(i)) for c in cells for i in range(len(c.data.ids))]
    if len(set(keys)) != len(keys):
        raise ValueError("two cells of the config produce the same rows (a grid repeated, or two solvers "
                         "that resolve to the same hyperparameters); remove the duplicate")
    return Plan(config, datasets, cells)
