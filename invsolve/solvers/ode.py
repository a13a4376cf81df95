"""Steppers for the probability-flow ODE of a Gaussian path, written over data predictions.

On a path x_t = alpha_t x0 + sigma_t eps (``invsolve.paths``) with a data prediction D(x_t) = E[x0 | x_t]
(the prior's ``x0_at``, or a guided estimate), the probability-flow ODE in the canonical coordinates
y = x / alpha, sigma~ = sigma / alpha (Karras et al. 2022, arXiv 2206.00364, Eq. 4 with s = 1) is

    dy / dsigma~ = (y - D) / sigma~ = eps_hat.

A stepper moves x from grid point i, (alpha_i, sigma_i), to i + 1; the last point may be the data end
(alpha = 1, sigma = 0). Methods:

- "euler": one Euler step in (y, sigma~), x_s = (sigma_s / sigma_t) x_t + (alpha_s - sigma_s alpha_t /
  sigma_t) D. This is at once DDIM with eta = 0 (Song et al. 2021, Eq. 12), the first-order
  DPM-Solver++ (an exponential integrator in the data prediction, exact for constant D) and, on the
  linear flow path x_t = t x1 + (1 - t) eps, the Euler step of the velocity (D - x) / (1 - t).
- "heun": EDM's second-order correction (Karras et al. 2022, Alg. 1, lines 9-11): the Euler step,
  a second data prediction at its end, and the average of the two slopes eps_hat; the step onto
  sigma = 0 stays Euler. NFE = 2 n - 1 when the grid ends at the data end, 2 n otherwise.
- "dpm2m": DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Alg. 2): the exponential integrator
  with D extrapolated linearly in lambda = log(alpha / sigma) from this step's and the previous
  step's predictions, D' = (1 + 1 / (2 r)) D_i - 1 / (2 r) D_{i-1}, r = h_{i-1} / h_i; first order at
  the first step and on the step onto sigma = 0 (where h is infinite), as k-diffusion's
  ``sample_dpmpp_2m``. NFE = n, as Euler.

Both second-order methods converge at order 2 in the step size on a smooth grid
(``tests/test_ode.py`` checks it on the Gaussian-mixture prior's exact ODE). A solver whose inner ODE
is a deterministic path ODE takes them as an option: ``ddim`` (``method``), ``ot_ode`` (``method``,
with the PiGDM-guided data estimate as D), ``daps`` (``ode_method``: its inner ODE, x0_hat from x_t
on a poly-7 grid ending at ode_sigma_min, as a variance-exploding path). D-Flow's flow map has its
own second-order step already (midpoint, the reference's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor

METHODS = ("euler", "heun", "dpm2m")


def check_method(method: str, who: str) -> None:
    if method not in METHODS:
        raise ValueError(f"{who}: method must be one of {METHODS}, got {method!r}")


def stepper_nfe(method: str, steps: int, ends_at_data: bool = True) -> int:
    """Data predictions a ``steps``-step run makes (the corrector of "heun" is skipped at sigma = 0)."""
    if method == "heun":
        return 2 * steps - (1 if ends_at_data else 0)
    return steps


class PathStepper:
    """Steps x through the grid (alphas[i], sigmas[i]), i = 0..n, of a Gaussian path.

    ``alphas`` / ``sigmas``: n + 1 floats (or a 1-D tensor), sigma decreasing; the last point may be
    sigma = 0 (the data end). The caller computes D at point i (so its loop keeps its own guard,
    progress and NFE counting) and calls ``step(i, x, d, data_fn)``; "heun" calls
    ``data_fn(x', i + 1)`` once for the corrector, "dpm2m" remembers the previous D.
    """

    def __init__(self, alphas: Sequence[float] | Tensor, sigmas: Sequence[float] | Tensor,
                 method: str = "euler"):
        check_method(method, "PathStepper")
        self.alphas = [float(a) for a in alphas]
        self.sigmas = [float(s) for s in sigmas]
        if len(self.alphas) != len(self.sigmas) or len(self.alphas) < 2:
            raise ValueError("alphas and sigmas need the same length n + 1 >= 2")
        if any(s < 0 for s in self.sigmas) or any(a <= 0 for a in self.alphas):
            raise ValueError("sigmas must be >= 0 and alphas > 0")
        self.method = method
        self._prev: tuple[Tensor, float] | None = None  # (D_{i-1}, h_{i-1})

    def __len__(self) -> int:
        return len(self.alphas) - 1

    def _lam(self, i: int) -> float:
        s = self.sigmas[i]
        return math.inf if s == 0 else math.log(self.alphas[i] / s)

    def euler(self, i: int, x: Tensor, d: Tensor) -> Tensor:
        """x_{i+1} = (sigma_s / sigma_t) x + (alpha_s - sigma_s alpha_t / sigma_t) D (DDIM, eta = 0)."""
        a_t, s_t, a_s, s_s = self.alphas[i], self.sigmas[i], self.alphas[i + 1], self.sigmas[i + 1]
        if s_s == 0:
            return a_s * d
        r = s_s / s_t
        return r * x + (a_s - r * a_t) * d

    def step(self, i: int, x: Tensor, d: Tensor,
             data_fn: Callable[[Tensor, int], Tensor] | None = None) -> Tensor:
        """x at grid point i + 1 from x at point i and D(x) at point i."""
        if self.method == "euler":
            return self.euler(i, x, d)
        if self.method == "heun":
            return self._heun(i, x, d, data_fn)
        return self._dpm2m(i, x, d)

    def _heun(self, i: int, x: Tensor, d: Tensor, data_fn) -> Tensor:
        x_e = self.euler(i, x, d)
        a_t, s_t, a_s, s_s = self.alphas[i], self.sigmas[i], self.alphas[i + 1], self.sigmas[i + 1]
        if s_s == 0:
            return x_e
        if data_fn is None:
            raise ValueError("heun needs data_fn(x, i) for its corrector")
        d_e = data_fn(x_e, i + 1)
        # slopes dy/dsigma~ at both ends, in y = x / alpha, sigma~ = sigma / alpha (EDM Alg. 1, l. 10-11)
        st, ss = s_t / a_t, s_s / a_s
        slope = 0.5 * ((x / a_t - d) / st + (x_e / a_s - d_e) / ss)
        return a_s * (x / a_t + (ss - st) * slope)

    def _dpm2m(self, i: int, x: Tensor, d: Tensor) -> Tensor:
        s_t, a_s, s_s = self.sigmas[i], self.alphas[i + 1], self.sigmas[i + 1]
        h = self._lam(i + 1) - self._lam(i)
        prev, self._prev = self._prev, (d, h)
        if s_s == 0 or prev is None:
            return self.euler(i, x, d)
        d_prev, h_prev = prev
        r = h_prev / h
        d2 = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * d_prev
        return (s_s / s_t) * x - a_s * math.expm1(-h) * d2
