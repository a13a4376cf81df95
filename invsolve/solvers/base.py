"""Shared mechanics of every posterior solver: hyperparameters, seeds, NFE counting, progress, NaN guard.

A solver is a dataclass whose fields are its hyperparameters (with the paper's defaults) and whose
``run`` method reads like the paper's algorithm box. ``solve`` wraps ``run`` with everything else.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from invsolve import paths as P
from invsolve.priors.base import Prior
from invsolve.problem import Problem
from invsolve.rng import Seed, make_generators, randn


@dataclass
class Result:
    """A solver's output: samples ``x`` (B, *x_shape), network evaluations ``nfe`` (batched calls),
    wall time ``seconds`` and solver-specific ``info``."""

    x: Tensor
    nfe: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


class CountingPrior(Prior):
    """Forwards to a prior and counts batched ``denoise`` calls (the NFE)."""

    def __init__(self, prior: Prior):
        super().__init__()
        self.inner = prior
        self.shape = prior.shape
        self.nfe = 0

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.nfe += 1
        return self.inner.denoise(x, sigma)


@dataclass
class Solver:
    """Base class. Subclasses set ``name`` / ``description``, add hyperparameter fields, and implement
    ``run(problem, prior, gens) -> (x, info)``, where ``prior`` counts its calls and ``gens`` holds one
    CPU generator per sample (draw noise with ``self.randn``)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    steps: int = 100
    progress: bool = False

    def __post_init__(self) -> None:
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"{self.name}: steps must be a positive integer, got {self.steps}")
        self.validate()

    def validate(self) -> None:
        """Check hyperparameters; raise ValueError saying what is expected."""

    def expected_nfe(self) -> int:
        """Batched network evaluations one ``solve`` makes (documented per solver; tested)."""
        return self.steps

    # --- entry point ----------------------------------------------------------------------------
    def solve(self, problem: Problem, prior: Prior, seed: Seed = 0) -> Result:
        """Draw one posterior sample per measurement in ``problem`` (use ``problem.repeat(n)`` for n)."""
        _check_devices(problem, prior)
        if prior.shape is not None and tuple(prior.shape) != tuple(problem.x_shape):
            raise ValueError(f"prior samples have shape {tuple(prior.shape)} but the problem's unknown has "
                             f"shape {tuple(problem.x_shape)}")
        gens = make_generators(seed, len(problem))
        counted = CountingPrior(prior)
        start = time.perf_counter()
        x, info = self.run(problem, counted, gens)
        seconds = time.perf_counter() - start
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

    def guard(self, x: Tensor, step: int, hint: str) -> None:
        """Raise if x has NaN/Inf or has diverged, naming the step and the hyperparameter to lower."""
        finite = bool(torch.isfinite(x).all())
        if not finite or float(x.detach().abs().max()) > self.divergence_bound:
            what = "non-finite values" if not finite else f"values beyond {self.divergence_bound:g} (diverged)"
            value = getattr(self, hint, None)
            now = f" (now {value})" if value is not None else ""
            raise FloatingPointError(f"{self.name}: {what} at step {step + 1}/{self.steps}; "
                                     f"lower {hint}{now} or check the measurement scale")

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Field names and defaults."""
        return {f.name: f.default for f in dataclasses.fields(cls)}


def _check_devices(problem: Problem, prior: Prior) -> None:
    tensors = list(prior.parameters()) + list(prior.buffers())
    if tensors and tensors[0].device != problem.y.device:
        raise ValueError(f"prior is on {tensors[0].device} but the problem is on {problem.y.device}; "
                         "call prior.to(device) or problem.to(device)")


# --- schedules and steps shared by several solvers ------------------------------------------------
def karras_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
                  ) -> Tensor:
    """EDM noise levels (Karras et al. 2022, Eq. 5), decreasing, float64, length ``steps``."""
    i = torch.arange(steps, dtype=torch.float64)
    ramp = i / max(steps - 1, 1)
    return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def time_grid(path: P.Path, steps: int) -> Tensor:
    """``steps`` times evenly spaced from the path's noisiest end t_max down to t_min (float64).

    On a discrete DDPM path the times are rounded to integer steps, as respaced samplers do.
    """
    t = torch.linspace(path.t_max, path.t_min, steps, dtype=torch.float64)
    if isinstance(path, P.VPDiscrete):
        if steps > path.num_steps:
            raise ValueError(f"{steps} steps exceed the {path.num_steps} steps of the discrete path")
        t = t.round()
    return t


def path_coefs(path: P.Path, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha_t, sigma_t) at a scalar time as 0-d tensors with like's dtype and device."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return (path.alpha(t).to(like.dtype).to(like.device), path.sigma(t).to(like.dtype).to(like.device))


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
