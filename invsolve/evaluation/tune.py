"""``invsolve tune CONFIG.yaml``: hyperparameter search for one solver on one task, on a validation
split, written as a preset file that ``invsolve.solve(..., preset=PATH)`` and evaluation configs
(``preset: PATH``) accept.

The search is an Optuna study (Akiba et al. 2019, arXiv 1907.10902), by default the TPE sampler
(Bergstra et al. 2011). Every trial evaluates the solver with one set of hyperparameters on every
validation item through the evaluation runner (``invsolve.evaluate``: per-sample seeds, one row per
item in ``DIR/trials/results.jsonl``), and its objective is the mean metric over the items: PSNR for
images (or SSIM, relative L2), sliced Wasserstein for the mixture. The config::

    name: dps-sr4
    seed: 0                 # seeds of the measurements and the solver (as in evaluate)
    sampler: tpe            # tpe | random | grid (grid: categorical only, each combination once)
    sampler_seed: 0
    startup_trials: 5       # TPE: random trials before the model takes over
    trials: 16              # the budget (--trials N raises it and continues the same study)
    data: {name: natural-rgb-test, size: 32, n: 2, split: val}
    operator: {name: sr4, noise_sigma: 0.05}
    prior: natural-rgb
    solver: {name: dps, steps: 100}       # fixed settings: steps, preset, hp
    space:
      zeta: {type: float, low: 0.01, high: 10.0, log: true}
      clip: {type: categorical, choices: [true, false]}
    metric: psnr            # psnr | ssim | rel_l2 | sw (default: psnr, sw for the mixture)
    include_base: true      # trial 0 evaluates the fixed settings, when they lie inside the space
    test: {name: natural-rgb-test, size: 32, n: 8}   # optional: base vs tuned on the test split

Reproducible and resumable:

- Trials are stored in ``DIR/study.journal`` (Optuna's JournalStorage file), so a killed tune resumes:
  the trial that was running is marked failed and asked again with the same values, and its items
  already in ``trials/results.jsonl`` are not run again. A second call with a larger budget continues
  the same study. A changed config (anything but ``trials`` and ``test``) is refused.
- The sampler is re-seeded before every trial with (sampler_seed, number of finished trials), so a
  resumed study asks for exactly the values an uninterrupted one does, and a rerun from scratch gives
  the same study.

The test split is never touched while tuning. Data sets with a ``split`` must be tuned on
``split: val``; when ``test`` is given, tuning refuses to start unless the validation and test items
are disjoint (by item id, by pixel content, and for natural-rgb crops by pixel region), and only after
the study ends are the base and the tuned settings evaluated on the test items (``DIR/test``).

Outputs: ``DIR/preset.json`` ({"solver", "task", "hyperparameters", "objective", "validation",
"trials", ...}), ``DIR/trials.md`` (every trial), ``DIR/config.yaml``, ``DIR/test/`` (table.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .config import (
    CTSlice,
    DataSpec,
    EvalConfig,
    GMMData,
    MRSlice,
    OperatorSpec,
    PriorSpec,
    RunSettings,
    SheppLogan,
    SolverSpec,
    _Strict,
)
from .data import Dataset, load_dataset, natural_region
from .plan import make_plan, solver_key
from .rows import canonical, latest_by_key, read_rows

JOURNAL = "study.journal"
PRESET = "preset.json"
Choice = str | int | float | bool | None


# --- the search space ---------------------------------------------------------------------------------
class FloatParam(_Strict):
    """A real hyperparameter in [low, high]; ``log`` samples log-uniformly, ``step`` on a grid."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def valid(self) -> FloatParam:
        if not self.high > self.low:
            raise ValueError(f"high ({self.high}) must exceed low ({self.low})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("give either log or step, not both")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and \
            self.low <= value <= self.high

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)


class IntParam(_Strict):
    """An integer hyperparameter in [low, high] (``step``, or log-uniform with ``log``)."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def valid(self) -> IntParam:
        if not self.high > self.low:
            raise ValueError(f"high ({self.high}) must exceed low ({self.low})")
        if self.log and (self.low <= 0 or self.step != 1):
            raise ValueError("a log integer range needs low > 0 and step 1")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and \
            self.low <= value <= self.high and (value - self.low) % self.step == 0

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)


class CategoricalParam(_Strict):
    """One of ``choices`` (strings, numbers, booleans or null)."""

    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1)

    def contains(self, value: Any) -> bool:
        return any(value == c and type(value) is type(c) for c in self.choices)

    def suggest(self, trial: Any, name: str) -> Choice:
        return trial.suggest_categorical(name, self.choices)


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
NO_SPLIT = (CTSlice, SheppLogan, MRSlice)
"""Data sets that are single test images: nothing to tune on."""


class TuneConfig(RunSettings):
    """A tuning study (see the module docstring for the layout)."""

    name: str = "tune"
    data: DataSpec
    operator: OperatorSpec | None = None
    prior: PriorSpec | None = None
    solver: SolverSpec
    space: dict[str, ParamSpec] = Field(min_length=1)
    metric: Literal["psnr", "ssim", "rel_l2", "sw"] | None = None
    trials: int = Field(20, ge=1)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    sampler_seed: int = Field(0, ge=0)
    startup_trials: int = Field(5, ge=1)
    include_base: bool = True
    test: DataSpec | None = None

    @field_validator("data")
    @classmethod
    def validation_split(cls, data: Any) -> Any:
        if isinstance(data, NO_SPLIT):
            raise ValueError(f"{data.name} is a single test image with no validation split; tune on "
                             "ellipse-phantoms (split: val) or a folder of your own validation images")
        if getattr(data, "split", "val") != "val":
            raise ValueError(f"tune on the validation split: set split: val for {data.name} (the test "
                             "split is only for the final comparison, 'test:')")
        return data

    @model_validator(mode="after")
    def consistent(self) -> TuneConfig:
        gmm = isinstance(self.data, GMMData)
        if gmm and (self.operator or self.prior):
            raise ValueError("the gmm data set brings its own operator and prior; remove 'operator' "
                             "and 'prior'")
        if not gmm and (self.operator is None or self.prior is None):
            raise ValueError("an image/field study needs 'operator' and 'prior'")
        if self.test is not None and type(self.test) is not type(self.data) and \
                not {type(self.test).__name__, type(self.data).__name__} <= {"Folder", "TensorFile"}:
            raise ValueError(f"'test' ({self.test.name}) must be the same kind of data as 'data' "
                             f"({self.data.name})")
        if self.test is not None and getattr(self.test, "split", "test") != "test":
            raise ValueError("'test' must use split: test")
        metric = self.objective_metric
        if gmm != (metric == "sw"):
            raise ValueError("metric sw belongs to the gmm data set, and the gmm data set to sw")
        valid = solver_cls(self.solver.name).hyperparameters()
        for name in self.space:
            if name not in valid or name == "progress":
                raise ValueError(f"space: {self.solver.name} has no hyperparameter {name!r}; valid: "
                                 f"{sorted(k for k in valid if k != 'progress')}")
            if name in self.solver.hp or (name == "steps" and self.solver.steps is not None):
                raise ValueError(f"space: {name!r} is also fixed in 'solver'; fix it or search it")
        if self.solver.samples != 1:
            raise ValueError("solver.samples (posterior mean) is for evaluation grids; a study scores "
                             "one sample per item: remove 'samples'")
        if self.sampler == "grid" and not all(isinstance(p, CategoricalParam)
                                              for p in self.space.values()):
            raise ValueError("sampler: grid needs categorical parameters only (list the values)")
        return self

    @property
    def objective_metric(self) -> str:
        return self.metric or ("sw" if isinstance(self.data, GMMData) else "psnr")

    @property
    def direction(self) -> str:
        return "maximize" if self.objective_metric in ("psnr", "ssim") else "minimize"

    def study_fingerprint(self) -> str:
        """A hash of everything that determines the trials (not the budget, not the test data)."""
        # solver.samples is always 1 here (validated) and left out, so studies made before it existed resume
        d = self.model_dump(mode="json", exclude={"trials": True, "test": True, "batch_size": True,
                                                  "device": True, "threads": True, "solver": {"samples"}})
        return hashlib.sha256(canonical(d).encode()).hexdigest()[:16]


def solver_cls(name: str) -> type:
    from invsolve import solvers

    return solvers.get(name)


def load_tune_config(config: str | Path | dict | TuneConfig) -> TuneConfig:
    """Parse and validate a tune config (YAML path, dict or ``TuneConfig``); errors name the key."""
    if isinstance(config, TuneConfig):
        return config
    source = "config"
    if isinstance(config, (str, Path)):
        path = Path(config)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        source = str(path)
        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{source}: expected a mapping with 'data', 'solver' and 'space'")
    try:
        return TuneConfig.model_validate(config)
    except ValidationError as err:
        raise ValueError(f"{source}: invalid tune config\n{err}") from err


# --- validation vs test ------------------------------------------------------------------------------
def _pixel_hashes(data: Dataset) -> set[str]:
    if data.x is None:
        return set()
    return {hashlib.sha256(x.float().numpy().tobytes()).hexdigest() for x in data.x}


def _overlap(a: tuple, b: tuple) -> bool:
    (pa, ya, xa, sa), (pb, yb, xb, sb) = a, b
    return pa == pb and ya < yb + sb and yb < ya + sa and xa < xb + sb and xb < xa + sa


def check_disjoint(val: Dataset, test: Dataset) -> None:
    """Raise ValueError if a validation item is also a test item: the same id, the same pixels, or
    (natural-rgb crops) an overlapping pixel region of the same photo."""
    shared = sorted(set(val.ids) & set(test.ids))
    if shared:
        raise ValueError(f"validation and test share {len(shared)} items, e.g. {shared[0]}")
    if _pixel_hashes(val) & _pixel_hashes(test):
        raise ValueError("a validation image equals a test image pixel for pixel; use disjoint data")
    if isinstance(val.spec, GMMData) and isinstance(test.spec, GMMData):
        seeds = {val.spec.problem_seed(i) for i in range(len(val.ids))}
        if seeds & {test.spec.problem_seed(i) for i in range(len(test.ids))}:
            raise ValueError("validation and test mixture problems share a problem seed")
    regions = [r for r in map(natural_region, test.ids) if r]
    for v in filter(None, map(natural_region, val.ids)):
        hit = next((t for t in regions if _overlap(v, t)), None)
        if hit:
            raise ValueError(f"validation crop {v} overlaps test crop {hit} of the same photo (crops of "
                             "different sizes); tune and test at one crop size")


# --- trials ----------------------------------------------------------------------------------------
def _eval_config(cfg: TuneConfig, solver: SolverSpec, data: Any, metrics: list[str]) -> EvalConfig:
    grid: dict[str, Any] = {"data": data, "solvers": [solver], "metrics": metrics}
    if cfg.operator is not None:
        grid.update(operators=[cfg.operator], priors=[cfg.prior])
    return EvalConfig(name=cfg.name, seed=cfg.seed, device=cfg.device, dtype=cfg.dtype,
                      batch_size=cfg.batch_size, figure_items=0, threads=cfg.threads, grids=[grid])


def _trial_solver(cfg: TuneConfig, params: dict[str, Any]) -> SolverSpec:
    hp = {**cfg.solver.hp, **{k: v for k, v in params.items() if k != "steps"}}
    steps = params.get("steps", cfg.solver.steps)
    return SolverSpec(name=cfg.solver.name, steps=steps, preset=cfg.solver.preset, hp=hp)


@dataclass
class TrialScore:
    """The objective of one trial: mean metric over the validation items, or the failure."""

    value: float | None
    values: list[float]
    error: str | None


def score_trial(cfg: TuneConfig, params: dict[str, Any], out: Path) -> TrialScore:
    """Evaluate the solver with ``params`` on the validation items (rows in ``out/trials``)."""
    from .runner import evaluate

    metric = cfg.objective_metric
    ecfg = _eval_config(cfg, _trial_solver(cfg, params), cfg.data, [metric])
    folder = out / "trials"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # solvers' warnings are recorded in the rows
        evaluate(ecfg, folder, progress=False)
    plan = make_plan(ecfg)
    rows = latest_by_key(read_rows(folder / "results.jsonl"))
    # the solver's rows only (a mixture grid also holds its floor and prior reference rows)
    found = [rows[canonical(plan.key(t))] for t in plan.tasks() if plan.cells[t[0]].reference is None]
    errors = [r["error"] for r in found if r.get("error")]
    if errors:
        return TrialScore(None, [], f"{len(errors)} of {len(found)} items failed: {errors[0]}")
    values = [r["metrics"][metric] for r in found]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return TrialScore(None, [], f"non-finite {metric} {values}")
    return TrialScore(sum(values) / len(values), values, None)


# --- the study ---------------------------------------------------------------------------------------
def _optuna():
    try:
        import optuna
    except ImportError as err:
        raise ValueError("invsolve tune needs optuna: pip install optuna") from err
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _sampler(cfg: TuneConfig, seed: int):
    optuna = _optuna()
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.sampler == "grid":  # the grid points are enqueued (``grid_points``); nothing to sample
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.startup_trials)


def open_study(cfg: TuneConfig, out: Path):
    """The study stored in ``out/study.journal`` (created on first use); refuses a changed config."""
    optuna = _optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    out.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(out / JOURNAL)))
    study = optuna.create_study(study_name=cfg.name, storage=storage, direction=cfg.direction,
                                sampler=_sampler(cfg, cfg.sampler_seed), load_if_exists=True)
    fingerprint = cfg.study_fingerprint()
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        study.set_user_attr("fingerprint", fingerprint)
        study.set_user_attr("config", cfg.model_dump(mode="json", exclude={"trials", "test"}))
    elif stored != fingerprint:
        raise ValueError(f"{out / JOURNAL} holds a study of a different config (data, operator, prior, "
                         "solver, space, metric, sampler or seeds changed); use a new --out folder")
    return study


def _counted(study) -> list:
    """Finished trials that count toward the budget: complete, or failed by the solver (not killed)."""
    from optuna.trial import TrialState

    return [t for t in study.trials if t.state == TrialState.COMPLETE
            or (t.state == TrialState.FAIL and "error" in t.user_attrs)]


def _recover(study) -> None:
    """Mark trials left RUNNING by a killed process failed, and ask their values again."""
    from optuna.trial import TrialState

    for t in study.trials:
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL)
            if t.params:
                study.enqueue_trial(t.params, user_attrs={**t.user_attrs, "resumed_from": t.number})


def grid_points(cfg: TuneConfig) -> list[dict[str, Any]]:
    """Every combination of the categorical choices, in the order of the config (sampler: grid).

    Enqueued when the study is created, so each is evaluated once, in order (Optuna's GridSampler
    stops the study from inside ``tell``, which only works within ``study.optimize``)."""
    import itertools

    names = list(cfg.space)
    return [dict(zip(names, combo))
            for combo in itertools.product(*(cfg.space[k].choices for k in names))]


def base_values(cfg: TuneConfig) -> dict[str, Any]:
    """The fixed settings' value of every searched hyperparameter (defaults, then preset, then hp)."""
    task = cfg.operator.name if cfg.operator else None
    return {k: v for k, v in solver_key(cfg.solver, task)["hp"].items() if k in cfg.space}


@dataclass
class TuneResult:
    """What ``tune`` produced: the study, the preset file, the best and the base objective, and the
    held-out comparison table (when ``test`` was given)."""

    study: Any
    out: Path
    preset: Path
    best: dict[str, Any]
    value: float
    base_value: float | None
    test_table: Path | None
    comparison: dict | None = None


def tune(config: str | Path | dict | TuneConfig, out: str | Path | None = None, *,
         trials: int | None = None, preset: str | Path | None = None, run_test: bool = True,
         progress: bool = True) -> TuneResult:
    """Run (or continue) a tuning study and write its preset; see the module docstring.

    Args:
        config: a YAML file, a dict or a ``TuneConfig``.
        out: folder of the study (default ``results/tune/<name>``).
        trials: budget overriding the config's ``trials`` (raise it to continue a study).
        preset: where to write the preset file (default ``out/preset.json``).
        run_test: evaluate base vs tuned on the config's ``test`` data after the study.
        progress: a tqdm bar over the trials.
    """
    from tqdm.auto import tqdm

    from .runner import evaluate

    cfg = load_tune_config(config)
    out = Path(out) if out is not None else Path("results") / "tune" / cfg.name
    budget = trials if trials is not None else cfg.trials
    if budget < 1:
        raise ValueError(f"trials must be >= 1, got {budget}")
    val = load_dataset(cfg.data)
    test = load_dataset(cfg.test) if cfg.test is not None else None
    if test is not None:
        check_disjoint(val, test)  # before any trial: the test split is never touched while tuning
    study = open_study(cfg, out)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    _recover(study)
    base = base_values(cfg)
    inside = len(base) == len(cfg.space) and all(cfg.space[k].contains(v) for k, v in base.items())
    if not study.trials:
        grid = grid_points(cfg) if cfg.sampler == "grid" else []
        if cfg.include_base and inside:
            study.enqueue_trial(base, user_attrs={"base": True})
            grid = [g for g in grid if g != base]
        for point in grid:
            study.enqueue_trial(point)
    if cfg.sampler == "grid":
        budget = min(budget, len(grid_points(cfg)))  # each grid point once
    done = len(_counted(study))
    with tqdm(total=budget, initial=min(done, budget), desc=f"tune {cfg.solver.name}",
              disable=not progress) as bar:
        _postfix(bar, study)
        while done < budget:
            study.sampler = _sampler(cfg, cfg.sampler_seed + done)  # same values after a resume
            trial = study.ask()
            params = {k: p.suggest(trial, k) for k, p in cfg.space.items()}
            score = score_trial(cfg, params, out)
            if score.error is not None:
                trial.set_user_attr("error", score.error)
                study.tell(trial, state=_optuna().trial.TrialState.FAIL)
            else:
                trial.set_user_attr("values", score.values)
                study.tell(trial, score.value)
            done += 1
            bar.update(1)
            _postfix(bar, study)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        raise ValueError(f"every trial failed (e.g. {_counted(study)[-1].user_attrs.get('error')}); "
                         "narrow the search space")
    best = study.best_trial
    base_trial = next((t for t in complete if t.user_attrs.get("base")), None)
    path = write_preset(cfg, study, val, Path(preset) if preset else out / PRESET, base_trial)
    (out / "trials.md").write_text(trials_table(cfg, study))
    table, comparison = None, None
    if run_test and test is not None:
        solvers = [cfg.solver.model_copy(update={"label": "base"}),
                   SolverSpec(name=cfg.solver.name, preset=str(path), label="tuned")]
        ecfg = _eval_config(cfg, solvers[0], cfg.test, [cfg.objective_metric])
        grid = ecfg.grids[0].model_copy(update={"solvers": solvers, "metrics": None})
        ecfg = ecfg.model_copy(update={"grids": [grid], "figure_items": 3})
        table = evaluate(ecfg, out / "test", progress=progress) / "table.md"
        comparison = compare_on_test(ecfg, out / "test", cfg.objective_metric)
        (out / "test" / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n")
    return TuneResult(study, out, path, dict(best.params), float(best.value),
                      None if base_trial is None else float(base_trial.value), table, comparison)


def compare_on_test(ecfg: EvalConfig, folder: Path, metric: str) -> dict:
    """Per-item base and tuned values of ``metric`` on the test rows, and their paired difference
    (tuned - base: mean, standard error, and how many items improved)."""
    plan = make_plan(ecfg)
    rows = latest_by_key(read_rows(folder / "results.jsonl"))
    per: dict[str, dict[str, float]] = {}
    for c, i in plan.tasks():
        cell = plan.cells[c]
        if cell.reference is not None:
            continue
        row = rows.get(canonical(cell.key(i)))
        if row is not None and not row.get("error"):
            per.setdefault(cell.solver.label, {})[cell.data.ids[i]] = row["metrics"][metric]
    items = sorted(set(per.get("base", {})) & set(per.get("tuned", {})))
    diff = [per["tuned"][k] - per["base"][k] for k in items]
    n = len(diff)
    mean = sum(diff) / n if n else float("nan")
    se = math.sqrt(sum((d - mean) ** 2 for d in diff) / (n - 1) / n) if n > 1 else float("nan")
    sign = 1 if metric in ("psnr", "ssim") else -1
    return {"metric": metric, "n": n, "items": items,
            "base": [per["base"][k] for k in items], "tuned": [per["tuned"][k] for k in items],
            "base_mean": sum(per["base"][k] for k in items) / n if n else None,
            "tuned_mean": sum(per["tuned"][k] for k in items) / n if n else None,
            "difference_mean": mean, "difference_se": se,
            "improved": sum(1 for d in diff if sign * d > 0)}


def _postfix(bar: Any, study: Any) -> None:
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if complete:
        bar.set_postfix_str(f"best {study.best_value:.4g} {study.best_params}"[:80])


def write_preset(cfg: TuneConfig, study: Any, val: Dataset, path: Path, base_trial: Any) -> Path:
    """Write the best trial as a preset file (JSON) and return its path.

    ``hyperparameters`` holds the registered preset's values (when the config names one), the fixed
    ``hp``, the steps, and the tuned values: everything that differs from the solver's defaults.
    """
    best = study.best_trial
    task = cfg.operator.name if cfg.operator else None
    hp: dict[str, Any] = {}
    if cfg.solver.preset is not None:
        hp.update(solver_cls(cfg.solver.name).preset_values(cfg.solver.preset, task))
    hp.update(cfg.solver.hp)
    if cfg.solver.steps is not None:
        hp["steps"] = cfg.solver.steps
    hp.update(best.params)
    counted = _counted(study)
    doc = {
        "solver": cfg.solver.name,
        "task": task,
        "hyperparameters": hp,
        "objective": {"metric": cfg.objective_metric, "direction": cfg.direction,
                      "value": best.value, "per_item": best.user_attrs.get("values"),
                      "base_value": None if base_trial is None else base_trial.value,
                      "base_hyperparameters": None if base_trial is None else base_trial.params},
        "validation": {"data": cfg.data.model_dump(mode="json"), "items": val.ids,
                       "operator": cfg.operator.model_dump(mode="json") if cfg.operator else None,
                       "prior": cfg.prior.model_dump(mode="json") if cfg.prior else None,
                       "seed": cfg.seed, "dtype": cfg.dtype},
        "trials": len(counted),
        "failed_trials": sum(1 for t in counted if t.state.name == "FAIL"),
        "best_trial": best.number,
        "search": {"sampler": cfg.sampler, "sampler_seed": cfg.sampler_seed,
                   "space": {k: p.model_dump(mode="json") for k, p in cfg.space.items()},
                   "base_preset": cfg.solver.preset},
        "created_by": "invsolve tune (invsolve.evaluation.tune)",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    return path


def trials_table(cfg: TuneConfig, study: Any) -> str:
    """Markdown table of every finished trial (number, values, objective or failure)."""
    names = list(cfg.space)
    title = (f"# tune {cfg.solver.name} on {cfg.operator.name if cfg.operator else 'gmm'}: "
             f"{cfg.objective_metric} ({cfg.direction}) on {cfg.data.name} (val)")
    lines = [title, "",
             "| trial | " + " | ".join(names) + f" | {cfg.objective_metric} | note |",
             "|---" * (len(names) + 3) + "|"]
    best = study.best_trial.number if any(t.state.name == "COMPLETE" for t in study.trials) else None
    for t in study.trials:
        if t.state.name not in ("COMPLETE", "FAIL"):
            continue
        vals = [f"{t.params[k]:.4g}" if isinstance(t.params.get(k), float) else str(t.params.get(k))
                for k in names]
        value = f"{t.value:.4f}" if t.value is not None else "failed"
        note = ("best " if t.number == best else "") + ("base " if t.user_attrs.get("base") else "")
        note += t.user_attrs.get("error", "")[:60] if t.state.name == "FAIL" else ""
        if t.state.name == "FAIL" and "error" not in t.user_attrs:
            note += "interrupted (asked again)"
        lines.append(f"| {t.number} | " + " | ".join(vals) + f" | {value} | {note.strip()} |")
    return "\n".join(lines) + "\n"


# --- command line ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``invsolve tune``."""
    ap = argparse.ArgumentParser(prog="invsolve tune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="YAML tune config (see experiments/configs/tune_dps_sr4.yaml)")
    ap.add_argument("--out", default=None, help="study folder (default results/tune/<name>)")
    ap.add_argument("--trials", type=int, default=None,
                    help="trial budget (overrides the config; raise it to continue a study)")
    ap.add_argument("--preset", default=None, help="preset file to write (default OUT/preset.json)")
    ap.add_argument("--no-test", action="store_true", help="skip the base-vs-tuned test evaluation")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        res = tune(args.config, args.out, trials=args.trials, preset=args.preset,
                   run_test=not args.no_test, progress=not args.no_progress)
    except ValueError as err:
        print(f"invsolve tune: {err}", file=sys.stderr)
        return 2
    base = "" if res.base_value is None else f" (base settings: {res.base_value:.4f})"
    print(f"best {res.value:.4f}{base} at {res.best}")
    print(f"preset: {res.preset}  (invsolve.solve(..., preset='{res.preset}'), or preset: in a config)")
    print((res.out / "trials.md").read_text())
    if res.test_table is not None:
        print(res.test_table.read_text())
        c = res.comparison
        print(f"held-out test ({c['n']} items, {c['metric']}): base {c['base_mean']:.4f}, tuned "
              f"{c['tuned_mean']:.4f}, paired difference {c['difference_mean']:+.4f} ± "
              f"{c['difference_se']:.4f} (s.e.), tuned better on {c['improved']} of {c['n']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
