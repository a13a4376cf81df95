"""Wrap any network that predicts eps / x0 / v / score / velocity on some path into a canonical Prior.

The conversion happens here, once, at the boundary (the k-diffusion ``external.py`` pattern): solvers
only ever see ``denoise(x, sigma)`` in the operator's units.
"""

from __future__ import annotations

from collections.abc import Callable

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

    At canonical level sigma in operator units the network sees the canonical level a sigma (a the
    range scale), at path time t = path.t_of_sigma(a sigma) and x_t = alpha_t x_net.
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
    ):
        super().__init__()
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

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        sigma = as_sigma(sigma, x)
        x_net = self.scale * x + self.shift
        t = self.path.t_of_sigma(self.scale * sigma)
        x_t = P.bcast(self.path.alpha(t), x) * x_net
        t_in = t if self.time_fn is None else self.time_fn(t)
        pred = self.module(x_t, t_in)
        if self.learned_variance:
            pred = pred[:, : x.shape[1]]
        if pred.shape != x.shape:
            raise ValueError(f"network output shape {tuple(pred.shape)} does not match its input "
                             f"{tuple(x.shape)}; for a learned-variance model pass learned_variance=True")
        x0_net = P.to_x0(pred.to(x.dtype), self.parameterization, x_t, t, self.path)
        return (x0_net - self.shift) / self.scale

    def extra_repr(self) -> str:
        return f"parameterization={self.parameterization!r}, path={self.path!r}, scale={self.scale}"


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
        out = self.fn(x, as_sigma(sigma, x))
        if out.shape != x.shape:
            raise ValueError(f"denoiser returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
        return out


def from_module(module: nn.Module, parameterization: str = "eps", path: P.Path | str = "vp_discrete",
                **kw) -> NetworkPrior:
    """Short form of ``NetworkPrior(module, parameterization, path, **kw)``."""
    return NetworkPrior(module, parameterization=parameterization, path=path, **kw)

