"""What the flow solvers (ot_ode, pnp_flow, dflow, flowchef) share: the linear path they run on, in
operator units, seen in each paper's own time convention; and the operator norm for their steps.

Flow papers write x_t on the linear path in one of two conventions:
    noise at t = 0 (torchcfm, flow_matching; OT-ODE, PnP-Flow, D-Flow):  x_t = t x1 + (1 - t) eps,
    noise at t = 1 (rectified flow; FlowChef):                          x_t = (1 - t) x0 + t eps,
with eps ~ N(0, I) in the network's units. ``FlowFrame`` runs a solver on the prior's own linear path
when it has one (a velocity network: queried at exactly the official times, in its own units, the
time reversed when the network uses the other convention), and otherwise on the linear path in the
solver's convention scaled to the prior's units (a diffusion or analytic prior, converted exactly by
``Prior.x0_at``). In operator units a network's path is x_t = a_t x + (s_t / scale) eps: the same times
and data weights, the noise divided by the prior's ``data_scale`` (``paths.ScaledPath``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from invsolve import paths as P
from invsolve.priors.base import Prior

from .base import solver_path
from .linalg import SVD_FLOOR, gram_solve, pinv


class FlowFrame:
    """The linear path a flow solver runs on, in operator units, in the solver's time ``tau``.

    ``noise_at_zero``: the solver's convention (True: noise at tau = 0, data at 1). Attributes:
    ``path`` (the path in operator units), ``flip`` (path time = 1 - tau), ``native`` (the prior's
    own path: exact times, no clamping here), ``scale`` / ``center`` (network units per operator unit,
    and the operator-unit value the network sees as 0), ``lo`` / ``hi`` (solver times the grid is
    clamped to: the whole [0, 1] on a native path, else where the prior is valid).
    """

    def __init__(self, prior: Prior, noise_at_zero: bool = True):
        self.noise_at_zero = noise_at_zero
        default = P.LinearFlow(noise_at_zero=noise_at_zero)
        self.path = solver_path(prior, None, family=(P.LinearFlow,), default=default)
        native = prior.native_path() if hasattr(prior, "native_path") else None
        self.native = native is not None and self.path is native
        base = P.base_of(self.path)
        self.flip = base.noise_at_zero != noise_at_zero
        self.scale = self.path.scale if isinstance(self.path, P.ScaledPath) else 1.0
        self.center = self.path.center if isinstance(self.path, P.ScaledPath) else 0.0
        self.lo, self.hi = 0.0, 1.0
        if not self.native:  # keep off the singular ends and inside the prior's noise range
            t_lo, t_hi = base.t_min, base.t_max
            sig = getattr(prior, "sigma_range", None)
            if sig is not None:  # sigma_canon decreases in t when noise sits at t = 0
                ends = sorted(float(self.path.t_of_sigma(torch.tensor(s, dtype=torch.float64))) for s in sig)
                t_lo, t_hi = max(t_lo, ends[0]), min(t_hi, ends[1])
            self.lo, self.hi = (t_lo, t_hi) if not self.flip else (1 - t_hi, 1 - t_lo)

    # --- time -------------------------------------------------------------------------------------
    def clamp(self, tau: float) -> float:
        """tau kept inside [lo, hi] (a no-op on the prior's own flow path)."""
        return min(max(float(tau), self.lo), self.hi)

    def t(self, tau: float) -> float:
        """The path's time at solver time tau."""
        return 1.0 - tau if self.flip else float(tau)

    def data_weight(self, tau: float) -> float:
        """a: the weight of the data in x_tau (tau, or 1 - tau with noise at 1)."""
        return tau if self.noise_at_zero else 1.0 - tau

    def noise_std(self, tau: float) -> float:
        """The standard deviation, in operator units, of the noise in x_tau: (1 - a) / scale."""
        return (1.0 - self.data_weight(tau)) / self.scale

    def start(self, tau: float, noise: Tensor) -> Tensor:
        """x_tau for data at the network's 0 (``center``): a center + noise_std noise, the official
        codes' a * 0 + (1 - a) eps in network units."""
        return self.data_weight(tau) * self.center + self.noise_std(tau) * noise

    # --- the network ------------------------------------------------------------------------------
    def data(self, prior: Prior, x: Tensor, tau: float) -> Tensor:
        """E[data | x_tau] (the flow's Tweedie estimate x + (1 - tau) v, or x - tau v)."""
        t = torch.full((x.shape[0],), self.t(tau), dtype=x.dtype, device=x.device)
        return prior.x0_at(x, t, self.path)

    def velocity(self, prior: Prior, x: Tensor, tau: float) -> tuple[Tensor, Tensor]:
        """(d x_tau / d tau, E[data | x_tau]) in the solver's convention.

        From the data estimate: v = (x1_hat - x) / (1 - tau) with noise at 0, (x - x0_hat) / tau with
        noise at 1 (the network's own velocity when it is a velocity network). At the data end the
        noise is 0 and v is not recoverable from x1_hat: tau is kept 1e-4 away from it there.
        """
        end = 1.0 - 1e-4
        tau_v = min(tau, end) if self.noise_at_zero else max(tau, 1 - end)
        x1 = self.data(prior, x, tau_v)
        v = (x1 - x) / (1 - tau_v) if self.noise_at_zero else (x - x1) / tau_v
        return v, x1


def back_projection(problem, kind: str, center: float, var: float, floor: float = SVD_FLOOR) -> Tensor:
    """An image from y about ``center`` (the operator-unit value the network sees as 0), for linear A:

    - "wiener": c + A^T (A A^T + sigma_y^2 / v I)^-1 (y - A c), the posterior mean for data
      N(c, v I) (v = ``var``, operator units); the floored A^+ y when noiseless, and no noise
      amplification where sigma_y exceeds sqrt(v) times a singular value;
    - "pinv": c + A^+ (y - A c) (``linalg.pinv``, floored);
    - "adjoint": c + A^T (y - A c), which is A^T y_net in network units (the flow codes' start).
    """
    op, y = problem.operator, problem.y
    dtype = y.real.dtype
    if center != 0:
        ones = torch.ones((len(problem), *problem.x_shape), dtype=dtype, device=y.device)
        y = y - op.A(center * ones)
    if kind == "adjoint":
        back = op.A_adjoint(y)
    elif kind == "pinv" or not problem.noise_sigma:
        back = pinv(op, y, floor)
    elif kind == "wiener":
        back = op.A_adjoint(gram_solve(op, y, 1.0, problem.noise_sigma**2 / var, floor=floor))
    else:
        raise ValueError(f"unknown back-projection {kind!r}; choose 'wiener', 'pinv' or 'adjoint'")
    return center + back.real.to(dtype)
