"""Shared mechanics of every posterior solver: hyperparameters, seeds, NFE counting, progress, NaN guard.

A solver is a dataclass whose fields are its hyperparameters (with the paper's defaults) and whose
``run`` method reads like the paper's algorithm box. ``solve`` wraps ``run`` with everything else.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from deepinv.physics import LinearPhysics
from torch import Tensor
from tqdm.auto import tqdm

from invsolve import paths as P
from invsolve.priors.base import Prior
from invsolve.problem import Problem
from invsolve.rng import Seed, make_generators, randn

from .linalg import SVD_FLOOR, gaussian_update
from .schedules import timesteps


@dataclass
class Result:
    """A solver's output: samples ``x`` (B, *x_shape), network evaluations ``nfe`` (batched calls),
    wall time ``seconds`` and solver-specific ``info``."""

    x: Tensor
    nfe: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


class CountingPrior(Prior):
    """Forwards to a prior, counts batched network calls (the NFE), and passes on what the prior knows
    about itself (shape, channels, ranges, units, native path)."""

    _FORWARDED = ("shape", "channels", "data_range", "sigma_range", "data_scale", "data_center")

    def __init__(self, prior: Prior):
        super().__init__()
        self.inner = prior
        for name in self._FORWARDED:
            setattr(self, name, getattr(prior, name, getattr(Prior, name)))
        self.nfe = 0

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.nfe += 1
        return self.inner.denoise(x, sigma)

    def x0_at(self, x_t: Tensor, t: Tensor | float, path: P.Path | str) -> Tensor:
        self.nfe += 1
        return self.inner.x0_at(x_t, t, path)

    def native_path(self) -> P.Path | None:
        return self.inner.native_path() if hasattr(self.inner, "native_path") else None


@dataclass(frozen=True)
class Preset:
    """Hyperparameters from an official configuration: ``values`` and the ``source`` file they come
    from (repository and path), with an optional ``note`` on units or conversions."""

    values: Mapping[str, Any]
    source: str
    note: str = ""


@dataclass
class Solver:
    """Base class. Subclasses set ``name`` / ``description``, add hyperparameter fields, and implement
    ``run(problem, prior, gens) -> (x, info)``, where ``prior`` counts its calls and ``gens`` holds one
    CPU generator per sample (draw noise with ``self.randn``).

    ``noiseless_projection`` (every solver): when sigma_y = 0 and the operator is linear, the sample
    ``run`` returns is projected onto {A x = y}, x + A^+ (y - A x) with the singular-value floor of
    ``linalg.pinv`` (the solver's own ``floor`` where it has one). The exact noiseless posterior lives
    on that set, and an approximate sampler's last iterate misses it in the directions the data fix:
    before this step, 15-step runs on a 16 x 16 noiseless deblurring (5 x 5 kernel, std 1) gave
    29 dB where A^+ y gives 51 dB (tests/test_robustness.py). Directions below the floor keep the
    sampler's values. ``noiseless_projection=False`` returns the published algorithm's last iterate.
    Baselines (``baseline = True``: pinv, bicubic, tv, ...) are returned as they are.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: a classical baseline (no prior): ``registry.available(baselines=False)`` leaves it out
    baseline: ClassVar[bool] = False
    #: preset name -> task (operator registry name, or "*" for any task) -> Preset
    presets: ClassVar[dict[str, dict[str, Preset]]] = {}
    #: options added after results were recorded -> the value that runs the former algorithm; result
    #: keys (``evaluation.plan.solver_key``) leave an option out at that value, so recorded rows of the
    #: unchanged algorithm stay valid
    key_neutral: ClassVar[dict[str, Any]] = {}

    steps: int = 100
    progress: bool = False
    noiseless_projection: bool = True

    def __post_init__(self) -> None:
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"{self.name}: steps must be a positive integer, got {self.steps}")
        self.validate()

    def validate(self) -> None:
        """Check hyperparameters; raise ValueError saying what is expected."""

    def expected_nfe(self) -> int:
        """Batched network evaluations one ``solve`` makes (documented per solver; tested)."""
        return self.steps

    # --- presets ---------------------------------------------------------------------------------
    @classmethod
    def preset_values(cls, preset: str | Mapping[str, Any] | Path, task: str | None = None
                      ) -> dict[str, Any]:
        """Hyperparameters of ``preset`` for ``task`` (the operator's registry name).

        ``preset`` is a registered name ("paper"; "paper:sr4" names the task explicitly), a dict of
        values, or a JSON file written by ``invsolve tune`` ({"solver": ..., "hyperparameters": {...}}).
        """
        if isinstance(preset, Mapping):
            values = dict(preset)
        elif isinstance(preset, Path) or str(preset).endswith(".json"):
            data = json.loads(Path(preset).read_text())
            if data.get("solver", cls.name) != cls.name:
                raise ValueError(f"{preset} is a preset for {data['solver']}, not {cls.name}")
            values = dict(data.get("hyperparameters", data))
        else:
            name, _, explicit = str(preset).partition(":")
            if name not in cls.presets:
                raise ValueError(f"{cls.name} has no preset {name!r}; available: "
                                 f"{sorted(cls.presets) or 'none'}")
            table, key = cls.presets[name], explicit or task
            if key not in table and "*" not in table:
                raise ValueError(f"{cls.name} preset {name!r} has no entry for task {key!r}; its tasks: "
                                 f"{sorted(table)} (name one as '{name}:TASK')")
            values = dict(table[key if key in table else "*"].values)
        unknown = sorted(set(values) - set(cls.hyperparameters()))
        if unknown:
            raise ValueError(f"preset {preset!r} sets unknown hyperparameters {unknown} of {cls.name}")
        return values

    # --- entry point ----------------------------------------------------------------------------
    def solve(self, problem: Problem, prior: Prior, seed: Seed = 0) -> Result:
        """Draw one posterior sample per measurement in ``problem`` (use ``problem.repeat(n)`` for n).

        ``info["out_of_range"]`` counts network queries outside the prior's valid noise range (clamped
        to its ends, as EDM does); a warning says so when it is not 0.
        """
        check_compatible(problem, prior)
        gens = make_generators(seed, len(problem))
        counted = CountingPrior(prior)
        before = getattr(prior, "out_of_range", 0)
        start = time.perf_counter()
        self._guard_state = None
        x, info = self.run(problem, counted, gens)
        self.flush_guard()
        linear = isinstance(problem.operator, LinearPhysics)
        if self.noiseless_projection and not self.baseline and problem.noise_sigma == 0 and linear:
            with torch.no_grad():
                x = gaussian_update(problem.operator, x.detach(), problem.y, 0.0,
                                    floor=getattr(self, "floor", SVD_FLOOR))
            info["noiseless_projection"] = True
        seconds = time.perf_counter() - start
        clamped = getattr(prior, "out_of_range", 0) - before
        if clamped:
            info["out_of_range"] = clamped
            warnings.warn(f"{self.name}: {clamped} network queries fell outside the prior's noise range "
                          f"{prior.sigma_range} and were clamped to its ends", stacklevel=2)
        return Result(x.detach(), counted.nfe, seconds, info)

    def run(self, problem: Problem, prior: Prior, gens: list[torch.Generator]) -> tuple[Tensor, dict]:
        raise NotImplementedError

    # --- helpers for subclasses ---------------------------------------------------------------
    @staticmethod
    def like(problem: Problem) -> Tensor:
        """An empty tensor with the unknown's real dtype and the problem's device."""
        dtype = problem.y.real.dtype if problem.y.is_complex() else problem.y.dtype
        return torch.empty(0, dtype=dtype, device=problem.y.device)

    def randn(self, gens: list[torch.Generator], problem: Problem) -> Tensor:
        """Per-sample standard normal draws of shape (B, *x_shape)."""
        return randn(gens, problem.x_shape, self.like(problem))

    @staticmethod
    def denoise_at(prior: Prior, x: Tensor, sigma: float) -> Tensor:
        """prior.denoise at one scalar noise level for the whole batch."""
        return prior.denoise(x, x.new_full((x.shape[0],), sigma))

    def iterate(self, n: int | None = None) -> Iterator[int]:
        """range(n or steps), with a tqdm bar when ``progress`` is set."""
        n = self.steps if n is None else n
        return iter(tqdm(range(n), desc=self.name, leave=False)) if self.progress else iter(range(n))

    #: |x| beyond this counts as diverged: no signal in the project's units comes near it.
    divergence_bound: ClassVar[float] = 1e10

    #: on a GPU the guard reads its flag back to the host every this many calls (and at the end)
    guard_every: ClassVar[int] = 10

    @staticmethod
    def _deferred(x: Tensor) -> bool:
        """Whether the guard defers its check: on CUDA, where reading a value back is a host
        synchronisation that stalls the loop; on CPU the read is free and each step is checked."""
        return x.device.type == "cuda"

    def guard(self, x: Tensor, step: int, hint: str, advice: str | None = None) -> None:
        """Raise if x has NaN/Inf or has diverged, naming the step and the hyperparameter to lower
        (or, when given, ``advice``: what to do instead, for solvers whose cause is not a step size).

        On CUDA the check stays on the device: a flag records the first bad step (0 = none, 1 =
        non-finite, 2 = diverged) and is read back every ``guard_every`` calls and when ``solve``
        ends, so the loop runs without host synchronisations; the error names the first bad step.
        """
        xd = x.detach()
        kind = torch.where(~torch.isfinite(xd).all(), 1,
                           torch.where(xd.abs().amax() > self.divergence_bound, 2, 0))
        self._guard_advice = (hint, advice)
        if not self._deferred(xd):
            self._raise_if_bad(int(kind), step)
            return
        state = getattr(self, "_guard_state", None)
        if state is None:
            state = self._guard_state = [torch.zeros((), dtype=torch.long, device=xd.device),
                                         torch.full((), -1, dtype=torch.long, device=xd.device), 0]
        first, at, _ = state
        new = (first == 0) & (kind > 0)
        state[0] = torch.where(new, kind, first)
        state[1] = torch.where(new, step, at)
        state[2] += 1
        if state[2] % self.guard_every == 0:
            self.flush_guard()

    def flush_guard(self) -> None:
        """Read the deferred guard's flag (one host synchronisation) and raise if a step went bad."""
        state = getattr(self, "_guard_state", None)
        if state is None:
            return
        kind, at = int(state[0]), int(state[1])
        if kind:
            self._guard_state = None
            self._raise_if_bad(kind, at)

    def _raise_if_bad(self, kind: int, step: int) -> None:
        if not kind:
            return
        hint, advice = self._guard_advice
        what = "non-finite values" if kind == 1 else f"values beyond {self.divergence_bound:g} (diverged)"
        value = getattr(self, hint, None)
        now = f" (now {value})" if value is not None else ""
        advice = advice or f"lower {hint}{now} or check the measurement scale"
        raise FloatingPointError(f"{self.name}: {what} at step {step + 1}/{self.steps}; {advice}")

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Field names and defaults."""
        return {f.name: f.default for f in dataclasses.fields(cls)}


def check_compatible(problem: Problem, prior: Prior) -> None:
    """Raise a ValueError naming both sides when prior and problem do not fit (device, shape,
    channels); warn when the data lie far outside the prior's data range."""
    tensors = list(prior.parameters()) + list(prior.buffers())
    if tensors and tensors[0].device != problem.y.device:
        raise ValueError(f"prior is on {tensors[0].device} but the problem is on {problem.y.device}; "
                         "call prior.to(device) or problem.to(device)")
    if prior.shape is not None and tuple(prior.shape) != tuple(problem.x_shape):
        raise ValueError(f"prior samples have shape {tuple(prior.shape)} but the problem's unknown has "
                         f"shape {tuple(problem.x_shape)}")
    channels = getattr(prior, "channels", None)
    if channels is not None and (len(problem.x_shape) < 3 or problem.x_shape[0] != channels):
        raise ValueError(f"the prior takes images of {channels} channel(s), (B, {channels}, H, W), but "
                         f"the problem's unknown has shape {tuple(problem.x_shape)}; use a prior of "
                         "the problem's modality (see invsolve list) or convert the images")
    rng = getattr(prior, "data_range", None)
    probe = problem.x_true if problem.x_true is not None else _same_units_measurement(problem)
    if rng is not None and probe is not None:
        lo, hi = rng
        width = hi - lo
        p_lo, p_hi = float(probe.real.min()), float(probe.real.max())
        if p_lo < lo - width or p_hi > hi + width:
            warnings.warn(f"the data span [{p_lo:.3g}, {p_hi:.3g}] but the prior was trained on "
                          f"[{lo:g}, {hi:g}]; rescale the images to the prior's range (e.g. divide "
                          "8-bit images by 255)", stacklevel=3)


def _same_units_measurement(problem: Problem) -> Tensor | None:
    """y when the operator keeps the image's units (inpainting, blur, down-sampling, denoising)."""
    from deepinv.physics import Blur, BlurFFT, Denoising, Downsampling, Inpainting

    kinds = (Blur, BlurFFT, Denoising, Downsampling, Inpainting)
    return problem.y if isinstance(problem.operator, kinds) else None


# --- schedules and steps shared by several solvers ------------------------------------------------
def karras_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
                  ) -> Tensor:
    """EDM noise levels (Karras et al. 2022, Eq. 5), decreasing, float64, length ``steps``."""
    i = torch.arange(steps, dtype=torch.float64)
    ramp = i / max(steps - 1, 1)
    return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def time_grid(path: P.Path, steps: int) -> Tensor:
    """``steps`` times evenly spaced from the path's noisiest end t_max down to t_min (float64).

    On a discrete DDPM path the times are rounded to integer steps (``schedules.timesteps`` with
    spacing "linspace").
    """
    return timesteps(path, steps, "linspace")


VP_FAMILY = (P.VPDiscrete, P.VPLinear, P.VPCosine)


def solver_path(prior: Prior, path: str | P.Path | None, family: tuple[type, ...] = VP_FAMILY,
                default: str = "vp_discrete") -> P.Path:
    """The path a solver runs on, in operator units.

    ``path=None``: the prior's native path when its base is of ``family`` (a DDPM network on its own
    integer steps); otherwise ``default``. A named path (or ``default``) is scaled to the prior's
    units, so that its noise levels mean in operator units what they mean to the network.
    """
    native = prior.native_path() if hasattr(prior, "native_path") else None
    if path is None and native is not None and isinstance(P.base_of(native), family):
        return native
    base = P.get_path(default if path is None else path)
    if isinstance(base, P.ScaledPath):
        return base
    scale = float(getattr(prior, "data_scale", 1.0))
    center = float(getattr(prior, "data_center", 0.0))
    return P.in_units(base, scale, -center * scale)


def start_state(path: P.Path, t: Tensor, noise: Tensor) -> Tensor:
    """x at the noisiest time t: alpha_t center + terminal_std(t) noise (DDPM code's x_T ~ N(0, I) in
    the network's units; EDM's sigma_max eps), in operator units."""
    t = torch.as_tensor(t, dtype=torch.float64)
    center = path.center if isinstance(path, P.ScaledPath) else 0.0
    a, std = float(path.alpha(t)), float(path.terminal_std(t))
    return a * center + std * noise


def path_coefs(path: P.Path, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha_t, sigma_t) at a scalar time as 0-d tensors with like's dtype and device."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return (path.alpha(t).to(like.dtype).to(like.device), path.sigma(t).to(like.dtype).to(like.device))


def path_coefs_host(path: P.Path, t: Tensor | float) -> tuple[float, float]:
    """(alpha_t, sigma_t) at a scalar time (a CPU schedule entry) as Python floats, for branching and
    scalar arithmetic without reading a device tensor back (a host synchronisation on a GPU)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return float(path.alpha(t)), float(path.sigma(t))


def ddim_step(x: Tensor, x0: Tensor, a_t: Tensor, s_t: Tensor, a_s: Tensor, s_s: Tensor,
              eta: float, noise: Tensor | None) -> Tensor:
    """One DDIM move from (alpha_t, sigma_t) to (alpha_s, sigma_s) given the x0 estimate
    (Song et al. 2021, arXiv 2010.02502, Eq. 12, written for a general Gaussian path).

    eta = 1 is DDPM's ancestral step (the variance of q(x_s | x_t, x0)), eta = 0 the deterministic ODE
    step. Coefficients are scalars or (B, 1, ...) tensors; ``noise`` may be None when eta = 0.
    """
    eps = (x - a_t * x0) / s_t
    # q(x_s | x_t, x0) has variance sigma_{t|s}^2 sigma_s^2 / sigma_t^2, sigma_{t|s}^2 = s_t^2 - (a_t/a_s)^2 s_s^2.
    var_ts = (s_t**2 - (a_t / a_s) ** 2 * s_s**2).clamp_min(0)
    c = eta * torch.sqrt(var_ts * s_s**2 / s_t**2)
    out = a_s * x0 + torch.sqrt((s_s**2 - c**2).clamp_min(0)) * eps
    if eta > 0:
        out = out + c * noise
    return out


def canonical_sigmas(path: P.Path, steps: int) -> Tensor:
    """The canonical (VE) noise levels sigma_t / alpha_t of ``time_grid(path, steps)``, decreasing."""
    return path.sigma_canon(time_grid(path, steps))
