"""Evaluation configs: YAML parsed with PyYAML, validated with pydantic v2 models (``extra="forbid"``).

An error names the bad key by its location, e.g. ``grids.0.solvers.1.stpes: Extra inputs are not
permitted``; unknown operator, prior and solver names give the registry's own error. The layout::

    name: quick                # results/<name> unless --out is given
    seed: 0                    # per-sample seeds derive from (seed, data item id)
    device: cpu                # cpu | cuda
    dtype: float32             # float32 | float64 (float64: rows independent of batch size to ~1e-15)
    batch_size: 8
    figure_items: 3            # first items of each data set shown in grid.png
    lpips_backbone: null       # local torchvision AlexNet weights; LPIPS is unavailable without them
    grids:                     # each grid is a product data x operators x priors x solvers
      - data: {name: natural-rgb-test, size: 32, n: 2}   # split: test (default) | val
        operators: [{name: sr4, noise_sigma: 0.05}, {name: inpaint_random, kwargs: {missing: 0.7}}]
        priors: [natural-rgb]
        solvers: [{name: pigdm, steps: 20}, {name: dps, preset: NAME, hp: {zeta: 0.5}}]
      - data: {name: gmm, dim: 8, dim_y: 2, n: 3, samples: 256}   # operator and prior are the case's
        solvers: [{name: ddrm, steps: 20}]

Operators, priors and solvers may be written as a bare name (``sr4``) instead of a mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import baselines  # noqa: F401  (registers the classical baselines: bicubic, tv, fbp, ...)

METRICS = ("psnr", "ssim", "rel_l2", "lpips", "sw")
"""Metric names a grid may ask for (seconds and NFE are always recorded)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Named(_Strict):
    """A registry entry that may be written as a bare name (``sr4``) or as a mapping."""

    @model_validator(mode="before")
    @classmethod
    def bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


# --- data sets ---------------------------------------------------------------------------------------
Split = Literal["test", "val"]
"""``split`` of the data sets that have one: "test" (the default, what tables report) or "val" (for
``invsolve tune``); the two never share an item (see each data set)."""


class NaturalRGBTest(_Strict):
    """Crops of the held-out photo(s) of ``priors.datasets.natural_rgb_images("test")``: ``n`` crops of
    ``size`` x ``size`` pixels on a non-overlapping grid, in a fixed seeded order (n = 2 is a prefix
    of n = 4).

    ``split``: the grid cells are ordered by a hash of their position; the last quarter of that
    order is the validation split ("val", taken from the end) and the rest the test split ("test",
    from the start), so at one crop size the two never share a pixel. Crops of different sizes can
    overlap: tune and test at one size (``invsolve tune`` checks the pixel regions).
    """

    name: Literal["natural-rgb-test"]
    size: int = Field(32, ge=8)
    n: int = Field(4, ge=1)
    split: Split = "test"


class Folder(_Strict):
    """PNG/JPEG files of ``path`` in name order (first ``n``), centre-cropped to ``size`` x ``size``
    (all images must then have one shape when ``size`` is not given); ``channels`` 3 (RGB) or 1.

    ``files``: only these file names of ``path``, in this order (e.g. DiffPIR's ffhq_val_100 list);
    ``resize``: first resize each image so that its shorter side has ``resize`` pixels (PIL's
    Lanczos filter; e.g. 1024 x 1024 FFHQ originals to 256). A folder has no split: give the
    validation images as another folder (``invsolve tune`` checks that no image is in both).
    """

    name: Literal["folder"]
    path: str
    size: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1)
    channels: Literal[1, 3] = 3
    files: list[str] | None = Field(None, min_length=1)
    resize: int | None = Field(None, ge=1)


class TensorFile(_Strict):
    """A (N, C, H, W) tensor in a .pt or .npy file (first ``n`` items), values in ``data_range``."""

    name: Literal["tensor"]
    path: str
    n: int | None = Field(None, ge=1)
    data_range: tuple[float, float] = (0.0, 1.0)


class SheppLogan(_Strict):
    """``priors.datasets.shepp_logan(size)``: one (1, size, size) phantom in [0, 1]."""

    name: Literal["shepp-logan"]
    size: int = Field(128, ge=8)


class CTSlice(_Strict):
    """``priors.datasets.ct_slice()``: pydicom's real 128 x 128 CT slice in [0, 1]."""

    name: Literal["ct-slice"]


class DarcyTest(_Strict):
    """``priors.datasets.darcy_fields(n, "test", size)``: permeabilities in [3, 12] (units of a).

    ``split``: "test" draws the fields with seed 1 (as ``darcy_fields``), "val" with seed 2; the
    prior trained on seed 0."""

    name: Literal["darcy-test"]
    n: int = Field(4, ge=1)
    size: int = Field(64, ge=8)
    split: Split = "test"


class EllipsePhantoms(_Strict):
    """``priors.datasets.ellipse_phantoms(n, size, seed)``: random head-like phantoms in [0, 1], the
    distribution the shipped ``phantom-ct`` prior was trained on (seed 0). ``split`` "val" uses
    seed 101, "test" seed 102: draws the prior never saw, disjoint from each other."""

    name: Literal["ellipse-phantoms"]
    n: int = Field(4, ge=1)
    size: int = Field(128, ge=8)
    split: Split = "test"


class MRSlice(_Strict):
    """pydicom's bundled real 64 x 64 MR slice ``MR_small.dcm`` as (1, 64, 64) in [0, 1] (divided by
    its largest value); a test image (no validation split)."""

    name: Literal["mr-slice"]


class GMMData(_Strict):
    """The mixture benchmark (``invsolve.evaluation.gmm.make_case``): ``n`` problems of dimension
    (dim, dim_y), ``samples`` chains each, scored by sliced Wasserstein to exact posterior samples.
    The case brings its own operator and prior; one row per problem."""

    name: Literal["gmm"]
    dim: int = Field(8, ge=1)
    dim_y: int = Field(2, ge=1)
    n: int = Field(3, ge=1)
    sigma_y: float | None = Field(None, ge=0)
    samples: int = Field(256, ge=2)
    n_directions: int = Field(100, ge=1)
    split: Split = "test"

    def problem_seed(self, item: int) -> int:
        """The ``make_case`` seed of item number ``item``: the item itself in the test split (problems
        0, 1, ...), VAL_PROBLEM_OFFSET + item in the validation split, so the splits never share a
        problem (for n < 10**6)."""
        return item + (VAL_PROBLEM_OFFSET if self.split == "val" else 0)


VAL_PROBLEM_OFFSET = 1_000_000
"""Mixture problems of the validation split are numbered from here (test problems from 0)."""


DataSpec = Annotated[NaturalRGBTest | Folder | TensorFile | SheppLogan | CTSlice | DarcyTest | GMMData
                     | EllipsePhantoms | MRSlice, Field(discriminator="name")]


# --- operators, priors, solvers -------------------------------------------------------------------
class OperatorSpec(_Named):
    """``operators.build(name, img_size=<data shape>, noise_sigma=..., **kwargs)``; the image size is
    added unless ``kwargs`` gives ``img_size`` or ``size`` (PDE operators take ``size``)."""

    name: str
    noise_sigma: float = Field(0.0, ge=0)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None

    @field_validator("name")
    @classmethod
    def known_name(cls, name: str) -> str:
        from invsolve import operators

        if name not in operators.available():
            operators.build(name)  # unknown: raises the registry's error, builds nothing
        return name

    def display(self) -> str:
        if self.label:
            return self.label
        args = [f"{k}={v}" for k, v in sorted(self.kwargs.items())]
        return f"{self.name}({', '.join(args)}) σ={self.noise_sigma:g}" if args else \
            f"{self.name} σ={self.noise_sigma:g}"


class PriorSpec(_Named):
    """``priors.load(name, **kwargs)``, then moved to the run's device and dtype."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None

    @field_validator("name")
    @classmethod
    def known_name(cls, name: str) -> str:
        from invsolve import priors

        if name not in priors.available():
            priors.load(name)  # unknown: raises the registry's error, loads nothing
        return name

    def display(self) -> str:
        if self.label:
            return self.label
        args = [f"{k}={v}" for k, v in sorted(self.kwargs.items())]
        return f"{self.name}({', '.join(args)})" if args else self.name


class SolverSpec(_Named):
    """``invsolve.solve(problem, prior, name, seed=[...], steps=..., preset=..., **hp)``; ``preset`` is
    passed only when set.

    ``samples``: the reconstruction scored is the mean of this many posterior samples per item (one
    batched solve of items x samples chains, chain j of an item seeded from its own stream), an
    estimate of the posterior mean (the MMSE estimate); NFE stays per chain. Image grids only; the
    mixture rows already score ``data.samples`` chains per problem."""

    name: str
    steps: int | None = Field(None, ge=1)
    preset: str | None = None
    hp: dict[str, Any] = Field(default_factory=dict)
    samples: int = Field(1, ge=1)
    label: str | None = None

    @field_validator("name")
    @classmethod
    def known_name(cls, name: str) -> str:
        from invsolve import solvers

        solvers.get(name)  # raises the registry's error for unknown names
        return name

    @model_validator(mode="after")
    def known_hp(self) -> SolverSpec:
        from invsolve import solvers

        valid = solvers.get(self.name).hyperparameters()
        unknown = sorted(set(self.hp) - set(valid))
        if unknown:
            raise ValueError(f"{self.name} has no hyperparameter(s) {unknown}; valid: {sorted(valid)}")
        if "steps" in self.hp:
            raise ValueError("give steps as the solver's 'steps' key, not inside 'hp'")
        if "progress" in self.hp:
            raise ValueError("'progress' is not a result-determining hyperparameter; leave it out")
        return self

    def display(self) -> str:
        if self.label:
            return self.label
        parts = [self.name]
        if self.preset:
            parts.append(f"[{self.preset}]")
        if self.steps is not None:
            parts.append(f"@{self.steps}")
        if self.hp:
            parts.append("(" + ", ".join(f"{k}={v}" for k, v in sorted(self.hp.items())) + ")")
        if self.samples > 1:
            parts.append(f" mean of {self.samples}")
        return "".join(parts)


class GridSpec(_Strict):
    """One product data x operators x priors x solvers (the mixture data set brings its own operator
    and prior, so ``operators`` and ``priors`` stay empty there)."""

    data: DataSpec
    operators: list[OperatorSpec] = Field(default_factory=list)
    priors: list[PriorSpec] = Field(default_factory=list)
    solvers: list[SolverSpec] = Field(min_length=1)
    metrics: list[Literal["psnr", "ssim", "rel_l2", "lpips", "sw"]] | None = None
    batch_size: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def consistent(self) -> GridSpec:
        if isinstance(self.data, GMMData):
            if any(s.samples > 1 for s in self.solvers):
                raise ValueError("solver 'samples' (posterior mean) applies to image grids; the gmm data "
                                 "set sets its chains per problem with data.samples")
            if self.operators or self.priors:
                raise ValueError("the gmm data set brings its own operator and prior (make_case); remove "
                                 "'operators' and 'priors' from this grid")
            if self.metrics and set(self.metrics) - {"sw"}:
                raise ValueError("gmm rows are scored by sliced Wasserstein only: metrics: [sw]")
        else:
            if not self.operators or not self.priors:
                raise ValueError("an image/field grid needs at least one entry in 'operators' and in "
                                 "'priors'")
            if self.metrics and "sw" in self.metrics:
                raise ValueError("'sw' (sliced Wasserstein) applies to the gmm data set only")
        for what, specs in (("operators", self.operators), ("priors", self.priors),
                            ("solvers", self.solvers)):
            labels = [s.display() for s in specs]
            dup = sorted({x for x in labels if labels.count(x) > 1})
            if dup:
                raise ValueError(f"{what}: entries {dup} appear twice; give them distinct 'label's")
        return self


class RunSettings(_Strict):
    """Run-wide settings shared by evaluations and tuning studies."""

    name: str = "evaluation"
    seed: int = Field(0, ge=0)
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    batch_size: int = Field(8, ge=1)
    threads: int | None = Field(None, ge=1)


class EvalConfig(RunSettings):
    """A whole evaluation: the grids plus run-wide settings (see the module docstring)."""

    figure_items: int = Field(3, ge=0)
    lpips_backbone: str | None = None
    grids: list[GridSpec] = Field(min_length=1)


def load_config(config: str | Path | dict | EvalConfig) -> EvalConfig:
    """Parse and validate a config (YAML file path, dict or ``EvalConfig``).

    Raises ``ValueError`` naming the bad key (pydantic's location, e.g. ``grids.0.data.size``).
    """
    if isinstance(config, EvalConfig):
        return config
    source = "config"
    if isinstance(config, (str, Path)):
        path = Path(config)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist; pass the path of a YAML config such as "
                             "experiments/configs/quick.yaml")
        source = str(path)
        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{source}: expected a mapping with a 'grids' key at the top level, "
                         f"got {type(config).__name__}")
    try:
        return EvalConfig.model_validate(config)
    except ValidationError as err:
        raise ValueError(f"{source}: invalid evaluation config\n{err}") from err


def dump_config(config: EvalConfig) -> str:
    """The validated config as YAML (defaults filled in), for ``DIR/config.yaml``."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
