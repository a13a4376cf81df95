"""Problem = forward operator + measurement (+ ground truth when simulated).

The operator is any ``deepinv.physics.Physics``; its ``noise_model`` fixes the likelihood used by
``misfit``. Gaussian and Poisson noise are supported; others raise a ValueError naming them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from deepinv.physics import GaussianNoise, Physics, PoissonNoise, ZeroNoise
from torch import Tensor

from invsolve.rng import Seed, make_generators, randn


@dataclass(frozen=True)
class Noise:
    """The measurement likelihood: ``kind`` in {"gaussian", "poisson"}; sigma (Gaussian std) or gain."""

    kind: str
    sigma: float = 0.0
    gain: float = 1.0
    normalize: bool = True


def noise_of(operator: Physics) -> Noise:
    """Read the likelihood from ``operator.noise_model`` (ZeroNoise counts as Gaussian with sigma 0)."""
    nm = getattr(operator, "noise_model", None)
    if nm is None or isinstance(nm, ZeroNoise):
        return Noise("gaussian", 0.0)
    if isinstance(nm, GaussianNoise):
        sigma = torch.as_tensor(nm.sigma)
        if sigma.numel() != 1:
            raise ValueError("per-sample Gaussian noise levels are not supported; use one scalar sigma")
        if sigma.item() < 0:
            raise ValueError(f"noise sigma must be >= 0, got {sigma.item()}")
        return Noise("gaussian", float(sigma))
    if isinstance(nm, PoissonNoise):
        gain = torch.as_tensor(nm.gain)
        if gain.numel() != 1 or gain.item() <= 0:
            raise ValueError("Poisson noise needs one positive scalar gain")
        return Noise("poisson", gain=float(gain), normalize=bool(nm.normalize))
    raise ValueError(f"unknown noise model {type(nm).__name__}: invsolve supports deepinv GaussianNoise, "
                     "PoissonNoise and ZeroNoise; set operator.noise_model to one of them")


def _per_sample_sum(r: Tensor) -> Tensor:
    return r.reshape(r.shape[0], -1).sum(1)


class Problem:
    """An inverse problem y = A(x) + noise.

    Args:
        operator: a ``deepinv.physics.Physics`` (A, A_adjoint for linear ones, noise_model).
        y: measurements, (B, ...) with B independent problems.
        x_true: optional ground truth, (B, ...).
        x_shape: shape of one unknown (without batch); inferred from x_true, or from A^T y for linear
            operators. Needed by solvers to draw initial states.
    """

    def __init__(self, operator: Physics, y: Tensor, x_true: Tensor | None = None,
                 x_shape: tuple[int, ...] | None = None):
        if not isinstance(y, Tensor):
            raise ValueError(f"y must be a torch.Tensor, got {type(y).__name__}")
        if y.ndim < 1:
            raise ValueError("y must have a leading batch dimension, e.g. y[None] for a single measurement")
        if not torch.isfinite(y).all():
            raise ValueError("y contains NaN or Inf values; clean the measurement (or mask the bad entries "
                             "in the operator) before solving")
        self.operator = operator
        self.noise = noise_of(operator)
        self.y = y
        if x_true is not None:
            if x_true.shape[0] != y.shape[0]:
                raise ValueError(f"x_true has batch size {x_true.shape[0]} but y has {y.shape[0]}; "
                                 "pass one ground truth per measurement")
            x_shape = tuple(x_true.shape[1:]) if x_shape is None else tuple(x_shape)
        self.x_true = x_true
        if x_shape is None:
            x_shape = self._infer_x_shape()
        self.x_shape = tuple(x_shape)
        self._check_y_shape()

    def _infer_x_shape(self) -> tuple[int, ...]:
        try:
            return tuple(self.operator.A_adjoint(self.y).shape[1:])
        except (AttributeError, NotImplementedError, RuntimeError, TypeError) as err:
            raise ValueError("cannot infer the shape of x from this operator; pass x_shape=(C, H, W) "
                             "or x_true") from err

    def _check_y_shape(self) -> None:
        # probe with a valid input: the ground truth if known, else ones (zeros are outside the domain of
        # operators such as Darcy, whose permeability must be positive)
        if self.x_true is not None:
            probe = self.x_true[:1].to(device=self.y.device)
        else:
            probe = torch.ones((1, *self.x_shape), dtype=_real(self.y.dtype), device=self.y.device)
        with torch.no_grad():
            y_shape = tuple(self.operator.A(probe).shape[1:])
        if y_shape != tuple(self.y.shape[1:]):
            raise ValueError(f"y has shape {tuple(self.y.shape[1:])} per sample but A(x) for x of shape "
                             f"{self.x_shape} has shape {y_shape}; check the operator's size arguments")

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def simulate(cls, operator: Physics, x: Tensor, seed: Seed = 0) -> Problem:
        """Simulate y = A(x) + noise, each sample's noise from its own generator (``seed``)."""
        noise = noise_of(operator)
        with torch.no_grad():
            clean = operator.A(x)
            gens = make_generators(seed, x.shape[0])
            if noise.kind == "gaussian":
                noisy = clean + noise.sigma * randn(gens, tuple(clean.shape[1:]), clean)
            else:
                rate = clean / noise.gain
                if (rate < 0).any():
                    raise ValueError("Poisson noise needs A(x) >= 0; check the data range of x")
                noisy = torch.stack([torch.poisson(r.cpu().double(), generator=g) for r, g in zip(rate, gens)])
                noisy = noisy.to(clean)
                noisy = noisy * noise.gain if noise.normalize else noisy
            y = _through_operator_noise(operator, noisy)
        return cls(operator, y, x_true=x.detach().clone())

    def repeat(self, n: int) -> Problem:
        """Each measurement repeated n times (consecutively): B -> B * n independent chains."""
        if n < 1:
            raise ValueError(f"repeat needs n >= 1, got {n}")
        xt = None if self.x_true is None else self.x_true.repeat_interleave(n, 0)
        return Problem(self.operator, self.y.repeat_interleave(n, 0), xt, self.x_shape)

    def __len__(self) -> int:
        return self.y.shape[0]

    def __getitem__(self, i: int | slice) -> Problem:
        sl = slice(i, i + 1) if isinstance(i, int) else i
        if isinstance(i, int) and not -len(self) <= i < len(self):
            raise IndexError(f"problem index {i} out of range for batch of {len(self)}")
        xt = None if self.x_true is None else self.x_true[sl]
        return Problem(self.operator, self.y[sl], xt, self.x_shape)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Problem:
        """Move measurement, ground truth and operator to ``device`` / ``dtype``."""
        op = self.operator.to(device=device, dtype=dtype) if dtype else self.operator.to(device)
        ydtype = self.y.dtype if (dtype is None or self.y.is_complex()) else dtype
        xt = None if self.x_true is None else self.x_true.to(device=device, dtype=dtype or self.x_true.dtype)
        return Problem(op, self.y.to(device=device, dtype=ydtype), xt, self.x_shape)

    # --- likelihood ---------------------------------------------------------------------------
    @property
    def noise_sigma(self) -> float | None:
        """Gaussian noise std (0 for noiseless), or None for non-Gaussian noise."""
        return self.noise.sigma if self.noise.kind == "gaussian" else None

    def residual(self, x: Tensor) -> Tensor:
        """y - A(x), shape of y."""
        return self.y - self.operator.A(x)

    def misfit(self, x: Tensor) -> Tensor:
        """Per-sample negative log-likelihood -log p(y | x) up to a constant, shape (B,).

        Gaussian: ||y - A x||^2 / (2 sigma^2); for noiseless problems (sigma = 0) the unit-variance
        stand-in ||y - A x||^2 / 2. Poisson (y = gain * N, N ~ Poisson(A x / gain)):
        sum(lambda - N log lambda) with lambda = A x / gain. Never summed over the batch.
        """
        if x.shape[0] != len(self):
            raise ValueError(f"x has batch size {x.shape[0]} but the problem has {len(self)} measurements; "
                             "use problem.repeat(n) for several samples per measurement")
        ax = self.operator.A(x)
        if self.noise.kind == "gaussian":
            var = self.noise.sigma**2 if self.noise.sigma > 0 else 1.0
            return _per_sample_sum((self.y - ax).abs() ** 2) / (2 * var)
        lam = (ax / self.noise.gain).clamp_min(1e-8)
        counts = self.y / self.noise.gain if self.noise.normalize else self.y
        return _per_sample_sum(lam - counts * torch.log(lam))

    def __repr__(self) -> str:
        return (f"Problem({type(self.operator).__name__}, batch={len(self)}, x_shape={self.x_shape}, "
                f"y_shape={tuple(self.y.shape[1:])}, noise={self.noise})")


class _Drawn(torch.nn.Module):
    """Stands in for a noise model and returns noise drawn beforehand (per-sample generators)."""

    def __init__(self, noisy: Tensor):
        super().__init__()
        self.noisy = noisy

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        return self.noisy


def _through_operator_noise(operator: Physics, noisy: Tensor) -> Tensor:
    """Apply the operator's own ``noise`` step to pre-drawn noisy data, so that operators which mask
    their noise (deepinv inpainting and MRI keep noise off unobserved entries) still do so."""
    original = operator.noise_model
    try:
        operator.noise_model = _Drawn(noisy)
        return operator.noise(noisy)
    finally:
        operator.noise_model = original


def _real(dtype: torch.dtype) -> torch.dtype:
    return torch.empty((), dtype=dtype).real.dtype
