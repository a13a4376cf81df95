"""Wrap any network that predicts eps / x0 / v / score / velocity on some path into a canonical Prior.

The conversion happens here, once, at the boundary (the k-diffusion ``external.py`` pattern): solvers
only ever see ``denoise(x, sigma)`` in the operator's units.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from invsolve import paths as P

from .base import Prior, as_sigma


class NetworkPrior(Prior):
    """A canonical prior from ``module(x_t, t_in) -> prediction``.

    Args:
        module: the network; called as ``module(x_t, t_in)`` with x_t in the network's units.
        parameterization: what it predicts: one of ``paths.PREDICTIONS``
            ("x0", "eps", "score", "v", "velocity").
        path: the path it was trained on (name or ``paths.Path``), e.g. "vp_discrete" for DDPM,
            "ve" for EDM-style sigma-conditioned models, "flow" for rectified flow.
        data_range: (lo, hi) of the network's data, e.g. (-1, 1); ``units`` is (lo, hi) of the
            operator's units (default (0, 1) for images). x_net = lo + (x - u_lo) (hi - lo) / (u_hi - u_lo).
        time_fn: maps path time t (B,) to the network's time input (default: t unchanged). Use it for
            networks conditioned on e.g. 1000 t, log(sigma) / 4, or an integer step.
        learned_variance: the network outputs 2C channels (guided diffusion); the first C are used.
        channels: the number of channels the network takes (checked against problems), if known.
        precision: the network's arithmetic: None / "fp32" (as its weights), "bf16" or "fp16"
            (``torch.autocast`` around the network call only; fp16 on CUDA only). The solver's state,
            the unit and parameterization conversions and the output stay in the input's dtype
            (float32, or float64 on request), so only the network's own rounding changes
            (``set_precision``; ``tests/test_precision.py`` bounds the denoising loss).

    At canonical level sigma in operator units the network sees the canonical level a sigma (a the
    range scale), at path time t = path.t_of_sigma(a sigma) and x_t = alpha_t x_net.

    The prior's native path in operator units is ``paths.ScaledPath(path, a, shift)``: a solver that
    runs on it (the default of every solver) queries ``x0_at`` at the path's own times, which calls the
    network at exactly those times (no sigma -> t round trip) on x_t^net = a x_t + alpha_t shift. The
    valid noise range is the path's [t_min, t_max] (``t_range``: all of [0, 1] for a velocity network
    on the linear path queried on its own path); outside it the network is called at the nearest
    end (EDM's clamp) and ``out_of_range`` counts such queries. At sigma = 0 the prior returns x.
    """

    def __init__(
        self,
        module: nn.Module,
        parameterization: str = "eps",
        path: P.Path | str = "vp_discrete",
        data_range: tuple[float, float] = (0.0, 1.0),
        units: tuple[float, float] = (0.0, 1.0),
        time_fn: Callable[[Tensor], Tensor] | None = None,
        learned_variance: bool = False,
        channels: int | None = None,
        precision: str | None = None,
    ):
        super().__init__()
        self.channels = channels
        self.set_precision(precision)
        if parameterization not in P.PREDICTIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}; choose one of {P.PREDICTIONS}")
        if data_range[1] <= data_range[0] or units[1] <= units[0]:
            raise ValueError(f"ranges must be increasing (lo, hi), got data_range={data_range}, units={units}")
        self.module = module
        self.parameterization = parameterization
        self.path = P.get_path(path)
        self.scale = (data_range[1] - data_range[0]) / (units[1] - units[0])
        self.shift = data_range[0] - units[0] * self.scale
        self.time_fn = time_fn
        self.learned_variance = learned_variance
        self.data_scale, self.data_center = self.scale, -self.shift / self.scale
        self.data_range = (float(units[0]), float(units[1]))
        self._native = P.ScaledPath(self.path, self.scale, self.shift)
        lo, hi = sorted(float(self.path.sigma_canon(torch.tensor(t, dtype=torch.float64)))
                        for t in (self.path.t_min, self.path.t_max))  # flows with noise at t = 0 decrease
        self.sigma_range = (lo / self.scale, hi / self.scale)
        # Times x0_at may query on the native path. A velocity network on the linear path is trained on
        # t ~ U[0, 1] and its x0 (x + (1 - t) v, or x - t v) is finite at both ends, so flow solvers may
        # call it at the noise end t = 0 as the official flow codes do; other paths stop at t_min, t_max.
        velocity_flow = parameterization == "velocity" and isinstance(self.path, P.LinearFlow)
        self.t_range = (0.0, 1.0) if velocity_flow else (self.path.t_min, self.path.t_max)
        self._out_of_range: Tensor | int = 0

    @property
    def out_of_range(self) -> int:
        """Network queries so far outside the valid noise range (clamped to its ends). Kept as a
        device tensor while sampling, so counting makes no host synchronisation; reading it does."""
        return int(self._out_of_range)

    @out_of_range.setter
    def out_of_range(self, value: int) -> None:
        self._out_of_range = value

    def native_path(self) -> P.Path:
        return self._native

    def set_precision(self, precision: str | None) -> NetworkPrior:
        """Run the network in ``precision`` (see the class docstring); returns self."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS, key=str)}, got {precision!r}")
        self.precision = None if precision == "fp32" else precision
        return self

    def _autocast(self, x: Tensor) -> contextlib.AbstractContextManager:
        if self.precision is None:
            return contextlib.nullcontext()
        if self.precision == "fp16" and x.device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device (CPU autocast has no fast float16); "
                             "use precision='bf16' on CPU")
        return torch.autocast(x.device.type, dtype=PRECISIONS[self.precision])

    def _call(self, x_t_net: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """The network's x0 (in network units) at (x_t^net, t), t of shape (B,) on the path."""
        t_in = t if self.time_fn is None else self.time_fn(t)
        if self.precision is not None and x_t_net.dtype == torch.float64:
            # autocast lowers float32 operands only: a float64 state enters the network as float32
            x_t_net = x_t_net.float()
            t_in = t_in.float() if torch.is_tensor(t_in) and t_in.is_floating_point() else t_in
        with self._autocast(x_t_net):
            pred = self.module(x_t_net, t_in)
        if self.learned_variance:
            pred = pred[:, : like.shape[1]]
        if pred.shape != like.shape:
            raise ValueError(f"network output shape {tuple(pred.shape)} does not match its input "
                             f"{tuple(like.shape)}; for a learned-variance model pass learned_variance=True")
        return P.to_x0(pred.to(like.dtype), self.parameterization, x_t_net, t, self.path)

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        return skip_zero_noise(x, sigma, self._denoise)

    def _denoise(self, x: Tensor, sigma: Tensor, zero: Tensor) -> Tensor:
        lo, hi = self.sigma_range
        outside = (~zero) & ((sigma < lo * (1 - 1e-6)) | (sigma > hi * (1 + 1e-6)))
        self._out_of_range = self._out_of_range + outside.sum()
        t = self.path.t_of_sigma(self.scale * sigma.clamp(lo, hi))
        t = t.clamp(self.path.t_min, self.path.t_max)
        x_t = P.bcast(self.path.alpha(t), x) * (self.scale * x + self.shift)
        return (self._call(x_t, t, x) - self.shift) / self.scale

    def x0_at(self, x_t: Tensor, t: Tensor | float, path: P.Path | str) -> Tensor:
        """E[x0 | x_t]; on the native path the network is called at exactly time t (no round trip)."""
        if not (isinstance(path, P.ScaledPath) and self._native.same_as(path)):
            return super().x0_at(x_t, t, path)
        t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)
        t = t.expand(x_t.shape[0]) if t.ndim == 0 else t
        t_lo, t_hi = self.t_range
        outside = (t < t_lo) | (t > t_hi)
        self._out_of_range = self._out_of_range + outside.sum()
        t = t.clamp(t_lo, t_hi)
        alpha = P.bcast(self.path.alpha(t), x_t)
        x_t_net = self.scale * x_t + alpha * self.shift  # x_t^net = a x_t + alpha_t shift
        return (self._call(x_t_net, t, x_t) - self.shift) / self.scale

    def extra_repr(self) -> str:
        extra = f", precision={self.precision!r}" if self.precision else ""
        return f"parameterization={self.parameterization!r}, path={self.path!r}, scale={self.scale}{extra}"


#: network precisions: None / "fp32" run as the weights are; the others under torch.autocast
PRECISIONS: dict[str | None, torch.dtype | None] = {None: None, "fp32": None, "bf16": torch.bfloat16,
                                                     "fp16": torch.float16}


class DenoiserPrior(Prior):
    """A prior from a function already in canonical form: ``fn(x, sigma) -> E[x0 | x]``.

    For a deepinv ``Denoiser`` (called as ``denoiser(x, sigma)``) or any user callable.
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]):
        super().__init__()
        self.fn = fn
        if isinstance(fn, nn.Module):
            self.module = fn

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        return skip_zero_noise(x, sigma, self._denoise)

    def _denoise(self, x: Tensor, sigma: Tensor, zero: Tensor) -> Tensor:
        out = self.fn(x, sigma)
        if out.shape != x.shape:
            raise ValueError(f"denoiser returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
        return out


def host_reads_free(t: Tensor) -> bool:
    """Whether branching on t's values is free: on the CPU. On a GPU it is a host synchronisation per
    network call, so there the zero-noise rows are selected with torch.where instead (the network then
    also runs on rows it will not use, only when some sigma is 0)."""
    return t.device.type == "cpu"


def skip_zero_noise(x: Tensor, sigma: Tensor | float, fn: Callable[[Tensor, Tensor, Tensor], Tensor]
                    ) -> Tensor:
    """``fn(x, sigma, zero)`` (sigma as a (B,) tensor, ``zero`` its rows at sigma <= 0) with those rows
    returned as x: the denoiser at zero noise is the identity. Without host reads where they stall
    (``host_reads_free``); on the CPU an all-zero sigma skips the call."""
    if not torch.is_tensor(sigma) and float(sigma) <= 0:
        return x
    sigma = as_sigma(sigma, x)
    zero = sigma <= 0
    host = host_reads_free(sigma)
    if host and bool(zero.all()):
        return x
    out = fn(x, sigma, zero)
    if host and not bool(zero.any()):
        return out
    return torch.where(_rows(zero, x), x, out)


def _rows(mask: Tensor, x: Tensor) -> Tensor:
    """A (B,) boolean mask shaped (B, 1, ..., 1) to select whole samples of x."""
    return mask.reshape(-1, *([1] * (x.ndim - 1)))


def from_module(module: nn.Module, parameterization: str = "eps", path: P.Path | str = "vp_discrete",
                **kw) -> NetworkPrior:
    """Short form of ``NetworkPrior(module, parameterization, path, **kw)``."""
    return NetworkPrior(module, parameterization=parameterization, path=path, **kw)

