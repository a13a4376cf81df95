"""Gaussian probability paths x_t = alpha_t x0 + sigma_t eps and exact conversions between predictions.

Every path maps its time t to the canonical noise level ``sigma = sigma_t / alpha_t`` of the
variance-exploding (EDM) space in which priors are defined: ``x_t / alpha_t = x0 + sigma * eps``
(Karras et al. 2022, "Elucidating the design space...", arXiv 2206.00364, Sec. 2 and Table 1).

Predictions a network can make at (x_t, t), all interconverted exactly by ``to_x0`` / ``from_x0``:
    ``x0``        the clean signal,
    ``eps``       the noise, eps = (x_t - alpha x0) / sigma,
    ``score``     grad log p_t(x_t) = -eps / sigma,
    ``v``         v = alpha eps - sigma x0 (Salimans & Ho 2022, arXiv 2202.00512, Eq. 9),
    ``velocity``  u = d x_t / dt = alpha' x0 + sigma' eps (flow matching, Lipman et al. 2023).

This module imports nothing from the project (torch only), so priors and solvers can both use it.
Times and sigmas are tensors of shape (B,) (or scalars), broadcast over the trailing dimensions of x.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

PREDICTIONS = ("x0", "eps", "score", "v", "velocity")


def bcast(a: Tensor | float, x: Tensor) -> Tensor:
    """Reshape a scalar or (B,) tensor to (B, 1, ..., 1) so it broadcasts against x of shape (B, ...)."""
    a = torch.as_tensor(a, dtype=x.dtype, device=x.device)
    if a.ndim == 0:
        return a
    if a.ndim != 1 or a.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"expected a scalar or a (B,) tensor with B={x.shape[0]}, got {tuple(a.shape)}")
    return a.reshape(-1, *([1] * (x.ndim - 1)))


class Path:
    """A Gaussian path x_t = alpha(t) x0 + sigma(t) eps for t in [t_min, t_max].

    Subclasses define ``alpha``, ``sigma``, their time derivatives and ``t_of_sigma``, the inverse of
    the canonical noise level ``sigma_canon(t) = sigma(t) / alpha(t)`` (increasing in t).
    """

    name = "path"
    t_min: float = 0.0
    t_max: float = 1.0

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def t_of_sigma(self, s: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma_canon(self, t: Tensor) -> Tensor:
        """Canonical (VE) noise level sigma_t / alpha_t."""
        return self.sigma(t) / self.alpha(t)

    def sample(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x_t = alpha_t x0 + sigma_t eps."""
        return bcast(self.alpha(t), x0) * x0 + bcast(self.sigma(t), x0) * eps

    def terminal_std(self, t: Tensor) -> Tensor:
        """Standard deviation of the reference noise that samplers start from at time t.

        sigma_t by default (EDM starts VE chains at sigma_max * eps, flows at eps); variance-preserving
        paths override it with 1, since DDPM code starts from x_T ~ N(0, I) exactly.
        """
        return self.sigma(t)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class VE(Path):
    """Variance exploding / EDM path: alpha = 1, sigma = t (t *is* the canonical sigma)."""

    name = "ve"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        self.t_min, self.t_max = sigma_min, sigma_max

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def t_of_sigma(self, s: Tensor) -> Tensor:
        return s


class VPLinear(Path):
    """Continuous variance-preserving path with linear beta(t) = b0 + t (b1 - b0), t in [0, 1].

    alpha_t = exp(-t^2 (b1 - b0) / 4 - t b0 / 2), sigma_t = sqrt(1 - alpha_t^2)
    (Song et al. 2021, score SDE, arXiv 2011.13456, Eq. 29 and App. B).
    """

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-5):
        self.b0, self.db = beta_min, beta_max - beta_min
        self.t_min, self.t_max = t_min, 1.0

    def _log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * t**2 * self.db - 0.5 * t * self.b0

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self._log_alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self._log_alpha(t)))

    def d_alpha(self, t: Tensor) -> Tensor:
        return -self.alpha(t) * (0.5 * t * self.db + 0.5 * self.b0)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def terminal_std(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def t_of_sigma(self, s: Tensor) -> Tensor:
        # -log alpha = log(1 + s^2) / 2 = db t^2 / 4 + b0 t / 2: solve the quadratic for t >= 0.
        big_l = 0.5 * torch.log1p(s**2)
        return (-0.5 * self.b0 + torch.sqrt(0.25 * self.b0**2 + self.db * big_l)) / (0.5 * self.db)


class VPDiscrete(Path):
    """DDPM's discrete variance-preserving schedule (Ho et al. 2020): t is the step index 0..N-1.

    ``alphas_cumprod[i] = prod_{j<=i} (1 - beta_j)`` with linear betas; alpha_t = sqrt(abar_t).
    Between integer steps log(abar) is interpolated linearly, so non-integer t (respaced samplers,
    sigma -> t conversion) is defined and differentiable. Defaults: the 1000-step linear schedule
    (beta 1e-4 .. 0.02) of DDPM and guided diffusion, used by the DPS/DAPS FFHQ checkpoints.
    """

    name = "vp_discrete"

    def __init__(
        self,
        num_steps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        betas: Tensor | None = None,
    ):
        if betas is None:
            betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        betas = torch.as_tensor(betas, dtype=torch.float64)
        self.log_abar = torch.cumsum(torch.log1p(-betas), 0)
        self.num_steps = len(betas)
        self.t_min, self.t_max = 0.0, float(self.num_steps - 1)
        # log of the canonical sigma at each integer step (increasing), for the inverse map.
        self._log_sc = 0.5 * torch.log(torch.expm1(-self.log_abar))

    def _interp(self, t: Tensor) -> tuple[Tensor, Tensor]:
        lab = self.log_abar.to(t.device)
        i = torch.floor(t).clamp(0, self.num_steps - 2).long()
        slope = lab[i + 1] - lab[i]
        val = lab[i] + (t.double() - i) * slope
        return val.to(t.dtype), slope.to(t.dtype)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * self._interp(t)[0])

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(self._interp(t)[0]))

    def d_alpha(self, t: Tensor) -> Tensor:
        val, slope = self._interp(t)
        return 0.5 * torch.exp(0.5 * val) * slope

    def d_sigma(self, t: Tensor) -> Tensor:
        val, slope = self._interp(t)
        return -0.5 * torch.exp(val) * slope / torch.sqrt(-torch.expm1(val))

    def terminal_std(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def t_of_sigma(self, s: Tensor) -> Tensor:
        """Inverse of sigma_canon; sigmas outside the schedule's range are clamped to its ends."""
        # log abar(t) is linear between steps, so solve exactly within the bracketing segment.
        lab = self.log_abar.to(s.device)
        target = -torch.log1p(s.double() ** 2)  # log abar at the requested sigma
        target = target.clamp(lab[-1], lab[0])
        i = torch.searchsorted(-lab, -target, right=True).clamp(1, self.num_steps - 1) - 1
        frac = (target - lab[i]) / (lab[i + 1] - lab[i])
        return (i + frac).to(s.dtype)


class VPCosine(Path):
    """Cosine variance-preserving path (Nichol & Dhariwal 2021, arXiv 2102.09672, Eq. 17), t in [0, 1).

    abar_t = f(t) / f(0), f(t) = cos^2((t + s) / (1 + s) * pi / 2); alpha_t = sqrt(abar_t).
    """

    name = "vp_cosine"

    def __init__(self, s: float = 0.008, t_max: float = 0.999):
        self.s = s
        self.t_min, self.t_max = 0.0, t_max
        self._c0 = math.cos(s / (1 + s) * math.pi / 2)

    def _theta(self, t: Tensor) -> Tensor:
        return (t + self.s) / (1 + self.s) * math.pi / 2

    def alpha(self, t: Tensor) -> Tensor:
        return torch.cos(self._theta(t)) / self._c0

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt((1 - self.alpha(t) ** 2).clamp_min(0))

    def d_alpha(self, t: Tensor) -> Tensor:
        return -torch.sin(self._theta(t)) / self._c0 * math.pi / (2 * (1 + self.s))

    def d_sigma(self, t: Tensor) -> Tensor:
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def terminal_std(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def t_of_sigma(self, s: Tensor) -> Tensor:
        a = torch.rsqrt(1 + s**2)
        return torch.arccos(a * self._c0) * 2 * (1 + self.s) / math.pi - self.s


class LinearFlow(Path):
    """Linear (rectified flow / conditional OT) path.

    By default data sits at t = 0 like every other path here: x_t = (1 - t) x0 + t eps, velocity
    u = eps - x0. Flow-matching code often puts noise at t = 0 instead (x_t = t x0 + (1 - t) eps,
    Lipman et al. 2023, Pokle et al. 2023): ``LinearFlow(noise_at_zero=True)`` is that convention,
    with velocity u = x0 - eps.
    """

    name = "flow"

    def __init__(self, noise_at_zero: bool = False, t_eps: float = 1e-4):
        self.noise_at_zero = noise_at_zero
        self.t_min, self.t_max = t_eps, 1.0 - t_eps

    def alpha(self, t: Tensor) -> Tensor:
        return t if self.noise_at_zero else 1 - t

    def sigma(self, t: Tensor) -> Tensor:
        return 1 - t if self.noise_at_zero else t

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.full_like(t, 1.0 if self.noise_at_zero else -1.0)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -self.d_alpha(t)

    def t_of_sigma(self, s: Tensor) -> Tensor:
        return 1 / (1 + s) if self.noise_at_zero else s / (1 + s)

    def __repr__(self) -> str:
        return f"LinearFlow(noise_at_zero={self.noise_at_zero})"


class ScaledPath(Path):
    """A path seen in the operator's units when the network works in units ``x_net = scale x + shift``.

    A network's chain x_t^net = alpha_t x0^net + sigma_t eps maps to x_t = (x_t^net - alpha_t shift) /
    scale = alpha_t x0 + (sigma_t / scale) eps: the same times and alphas, sigma divided by ``scale``.
    So a solver that runs on this path in operator units visits exactly the times the network was
    trained at (DDPM's integer steps, EDM's sigmas), and its canonical noise levels are the network's
    divided by ``scale``. ``shift`` only enters through ``center = -shift / scale``, the operator-unit
    value the network sees as 0 (where its chains start: x_T = alpha_T center + terminal noise).
    """

    def __init__(self, base: Path, scale: float = 1.0, shift: float = 0.0):
        if isinstance(base, ScaledPath):
            raise ValueError("ScaledPath of a ScaledPath: scale the base path once")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.base, self.scale, self.shift = base, float(scale), float(shift)
        self.name, self.t_min, self.t_max = base.name, base.t_min, base.t_max

    @property
    def center(self) -> float:
        return -self.shift / self.scale

    def alpha(self, t: Tensor) -> Tensor:
        return self.base.alpha(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self.base.sigma(t) / self.scale

    def d_alpha(self, t: Tensor) -> Tensor:
        return self.base.d_alpha(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return self.base.d_sigma(t) / self.scale

    def terminal_std(self, t: Tensor) -> Tensor:
        return self.base.terminal_std(t) / self.scale

    def t_of_sigma(self, s: Tensor) -> Tensor:
        return self.base.t_of_sigma(s * self.scale)

    def same_as(self, other: object) -> bool:
        """True when ``other`` is this path (same base object, scale and shift)."""
        return (isinstance(other, ScaledPath) and other.base is self.base and other.scale == self.scale
                and other.shift == self.shift)

    def __repr__(self) -> str:
        return f"ScaledPath({self.base!r}, scale={self.scale:g}, shift={self.shift:g})"


def in_units(path: Path, scale: float = 1.0, shift: float = 0.0) -> Path:
    """``path`` as seen in operator units (a ``ScaledPath``; the identity map returns it as is)."""
    if isinstance(path, ScaledPath):
        return path
    return path if (scale == 1.0 and shift == 0.0) else ScaledPath(path, scale, shift)


def base_of(path: Path) -> Path:
    """The path a ``ScaledPath`` wraps (any other path is its own base)."""
    return path.base if isinstance(path, ScaledPath) else path


PATHS: dict[str, type[Path]] = {
    "ve": VE,
    "vp": VPLinear,
    "vp_discrete": VPDiscrete,
    "vp_cosine": VPCosine,
    "flow": LinearFlow,
}


def get_path(path: str | Path) -> Path:
    """A path instance from a name in ``PATHS`` (default parameters) or an instance (returned as is)."""
    if isinstance(path, Path):
        return path
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; choose one of {sorted(PATHS)} or pass a Path instance")
    return PATHS[path]()


def _coefs(path: Path, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return tuple(bcast(f(t), x) for f in (path.alpha, path.sigma, path.d_alpha, path.d_sigma))


def _check_kind(kind: str) -> None:
    if kind not in PREDICTIONS:
        raise ValueError(f"unknown prediction {kind!r}; choose one of {PREDICTIONS}")


def to_x0(pred: Tensor, kind: str, x_t: Tensor, t: Tensor | float, path: Path) -> Tensor:
    """Convert a ``kind`` prediction at (x_t, t) on ``path`` into the implied x0 prediction."""
    _check_kind(kind)
    a, s, da, ds = _coefs(path, t, x_t)
    if kind == "x0":
        return pred
    if kind == "eps":
        return (x_t - s * pred) / a
    if kind == "score":
        return (x_t + s**2 * pred) / a
    if kind == "v":
        return (a * x_t - s * pred) / (a**2 + s**2)
    return (ds * x_t - s * pred) / (a * ds - s * da)  # velocity


def from_x0(x0: Tensor, kind: str, x_t: Tensor, t: Tensor | float, path: Path) -> Tensor:
    """Express an x0 prediction at (x_t, t) on ``path`` as a ``kind`` prediction."""
    _check_kind(kind)
    a, s, da, ds = _coefs(path, t, x_t)
    if kind == "x0":
        return x0
    eps = (x_t - a * x0) / s
    if kind == "eps":
        return eps
    if kind == "score":
        return -eps / s
    if kind == "v":
        return a * eps - s * x0
    return da * x0 + ds * eps  # velocity


def convert(pred: Tensor, src: str, dst: str, x_t: Tensor, t: Tensor | float, path: Path) -> Tensor:
    """Convert a prediction of kind ``src`` into kind ``dst`` at (x_t, t) on ``path``."""
    return from_x0(to_x0(pred, src, x_t, t, path), dst, x_t, t, path)
