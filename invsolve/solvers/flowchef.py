"""FlowChef: steering rectified flow models in the vector field, gradient-free.

Patel, Wen, Metaxas & Yang 2024, "Steering Rectified Flow Models in the Vector Field for Controlled
Image Generation", arXiv 2412.00100, Sec. 4 and Algorithm 1; official code FlowChef/FlowChef,
``inverseproblems/pixel_models/rfpp/generate_inverseproblems_flowchef.py``, ``sample_ode_generative``
(pixel-space rectified flow, the paper's Table 1 setting; run by ``inverseproblems_flowchef.sh``).
On the rectified-flow path with data at t = 0, x_t = (1 - t) x0 + t eps (velocity v = eps - x0), the
clean estimate is x0_hat = x_t - t v. Because the learned field of a (nearly) straight flow barely
changes with x_t, the gradient of the cost L(x0_hat) with respect to x_t is taken with v frozen (no
backpropagation through the network). On the grid t_0 = 1 - 1e-5, t_i = (N - i) / N, t_N = 0, from
x = (1 - 1e-5) eps, each step:
    v = v(x_t, t);  x0_hat = x_t - t v;  x_t <- x_t - s grad_x L(x0_hat) (not at the last step);
    x_{t_next} = x_t + (t_next - t) v        (Euler with the unsteered v).
The reference's cost is the mean squared error over the measurement, L = mean((A x0_hat - y)^2), in
[-1, 1] units, with s = ``gradient_scale`` (500 in every published run).

Units and step: for a linear operator the reference's step moves x by s (2 / M) A^T (A x0_hat - y) in
any affine units of x (M = number of measured values), so ``step`` needs no conversion:
``normalize="mse"`` is that step. The default ``normalize="lipschitz"`` moves x by
``step`` / ||A||^2 A^T (A x0_hat - y) (||A||^2 by power iteration per problem): a fraction of a full
Landweber step whatever the operator's scale. The solver runs on the prior's own flow path when it
has one (a network with noise at t = 0 is queried at 1 - t, its own time), otherwise on the linear path
in the prior's units (``flows.FlowFrame``).

Deviations from the official code (each with the option that restores it):
- Step normalised by ||A||^2 (above): the paper's step s 2 / M is stable only while s 2 ||A||^2 / M < 2
  (about 0.08 on the paper's 64 x 64 tasks, but 680 on the default 128 x 128 sparse-view CT at
  s = 500: ||A||^2 = 3.7e3, M = 5460); ``normalize="mse"`` restores it.
- M counts one sample's measurements (the reference averages over the batch too, so its step shrinks
  with the batch size; its published runs use batch size 1).
- The reference's operators add fresh measurement noise inside the cost when sigma_y > 0 (its
  ``degradation`` draws noise on every call); here the cost compares with y only.
- ``inner`` > 1 repeats the guidance step with the same v (the reference: 1).

Option ``normalize="gram"`` (linear operators, Gaussian noise): the Gauss-Newton step x0_hat ->
x0_hat + A^T (A A^T + sigma_y^2 / r_t^2 I)^-1 (y - A x0_hat), r_t = ``prior_std`` t (network units),
i.e. the mean of N(x0_hat, r_t^2 I) given y, taken at every step including the last. It fits weak
singular directions that a step normalised by ||A||^2 barely moves (deblurring, CT).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from deepinv.physics import LinearPhysics
from torch import Tensor

from invsolve import paths as P

from .base import Preset, Solver
from .flows import FlowFrame
from .linalg import gaussian_update, operator_norm2
from .registry import register

_SRC = ("FlowChef/FlowChef inverseproblems/pixel_models/rfpp/inverseproblems_flowchef.sh "
        "(N = 100 baseline runs: --solver euler --gradient_scale 500, noise_sigma 0)")
_NOTE = ("AFHQ-Cat / CelebA 64 x 64 in [-1, 1], noiseless: box 20 x 20, SR x4 by average pooling "
         "(sr4_pool here), deblurring 11 x 11 kernel with std 1.0")


def _paper() -> Preset:
    return Preset({"steps": 100, "step": 500.0, "normalize": "mse", "inner": 1}, _SRC, _NOTE)


@register
@dataclass
class FlowChef(Solver):
    """FlowChef (Alg. 1): ``steps`` Euler steps from t = 1 to 0, one network call each (NFE = steps);
    ``inner`` guidance steps per time step (they reuse v, no extra NFE). The cost is the squared
    residual: the method ignores the noise level, fits y's noise, and warns when y is noisy.
    Default: ``step`` = 1 of the ||A||^2-normalised step (a full Landweber step on x0_hat per time
    step)."""

    name = "flowchef"
    description = "Gradient-free steering of rectified flows in the vector field (Patel et al. 2024)"
    presets: ClassVar[dict[str, dict[str, Preset]]] = {"paper": {"inpaint_box": _paper(), "sr4_pool": _paper(), "sr4": _paper(),
                         "blur_gauss": _paper()}}

    steps: int = 100
    step: float = 1.0
    inner: int = 1
    normalize: str = "lipschitz"
    prior_std: float = 1.0

    def validate(self) -> None:
        if self.step < 0 or self.inner < 0:
            raise ValueError("flowchef: step and inner must be >= 0")
        if self.normalize not in ("gram", "lipschitz", "mse"):
            raise ValueError(f"flowchef: normalize must be 'gram', 'lipschitz' or 'mse' (the paper's), "
                             f"got {self.normalize!r}")

    def times(self) -> list[float]:
        """The reference grid: 1 - 1e-5, (N - 1) / N, ..., 1 / N, 0."""
        ts = [i / self.steps for i in reversed(range(1, self.steps + 1))] + [0.0]
        ts[0] = 1 - 1e-5
        return ts

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        like = self.like(problem)
        if problem.noise_sigma != 0.0 and self.normalize != "gram":
            warnings.warn("flowchef: the guidance ignores the measurement noise and drives A x0_hat to y, "
                          "noise included (robustness matrix, SR x4 at sigma_y 0.05: residual 1e-6 per value "
                          "against sigma_y^2 = 2.5e-3, 20.8 dB on the mean of 4 samples against 22.1 for "
                          "A^+ y); pnp_flow and ot_ode weigh the noise", stacklevel=3)
        frame = FlowFrame(prior, noise_at_zero=False)  # rectified flow: data at t = 0, noise at t = 1
        ts = [frame.clamp(t) for t in self.times()]
        info = {}
        gram = self.normalize == "gram"
        if gram and (not isinstance(problem.operator, LinearPhysics) or problem.noise_sigma is None):
            raise ValueError("flowchef: normalize='gram' needs a linear operator (deepinv "
                             "LinearPhysics) and Gaussian noise; use normalize='mse' (the paper's step) "
                             "or try dps / daps")
        if gram:
            eta = None
        elif self.normalize == "lipschitz":
            if not isinstance(problem.operator, LinearPhysics):
                raise ValueError("flowchef: normalize='lipschitz' needs a linear operator (deepinv "
                                 "LinearPhysics) for ||A||^2; use normalize='mse' (the paper's step)")
            norm2 = operator_norm2(problem.operator, problem.x_shape, like, len(problem))
            eta, info["op_norm2"] = self.step / norm2, norm2
        else:  # s grad mean((A x - y)^2) = s 2 / M A^T (A x - y), M measured values per sample
            eta = torch.full((len(problem),), 2 * self.step / math.prod(problem.y.shape[1:]),
                             dtype=like.dtype, device=like.device)
        eta = None if gram else eta.to(like.dtype)
        x = frame.start(ts[0], self.randn(gens, problem))  # x_1 = (1 - 1e-5) eps in network units
        for i in self.iterate():
            t, t_next = ts[i], ts[i + 1]
            with torch.no_grad():
                vel, _ = frame.velocity(prior, x, t)
            if gram:  # every step, the last included (t_next = 0): the output is x0_hat + delta
                for _ in range(self.inner):
                    delta = self._gram_delta(problem, x - t * vel, self.prior_std * t, frame.scale)
                    x = x + self.step * (1 - t_next) * delta
            elif i < self.steps - 1:
                for _ in range(self.inner):
                    x0 = (x - t * vel).detach().requires_grad_(True)  # x0_hat with v frozen
                    loss = 0.5 * problem.residual(x0).abs().pow(2).reshape(len(problem), -1).sum(1)
                    (grad,) = torch.autograd.grad(loss.sum(), x0)  # per-sample gradients, no network VJP
                    x = x - P.bcast(eta, x) * grad  # steer x_t in the vector field
            with torch.no_grad():
                x = x + (t_next - t) * vel  # Euler step with the unsteered velocity
            self.guard(x, i, "step")
        return x.detach(), info

    @staticmethod
    def _gram_delta(problem, x0: Tensor, t: float, scale: float) -> Tensor:
        """A^T (A A^T + lambda_t I)^-1 (y - A x0_hat), lambda_t = sigma_y^2 / r_t^2 with r_t = t
        (network units; t / scale in ours): the Gauss-Newton (Levenberg-Marquardt) step of the
        squared residual, i.e. the mean of N(x0_hat, r_t^2 I) given y; noiseless, the floored
        projection of x0_hat onto {A x = y}."""
        sigma, r = float(problem.noise_sigma), t / scale
        with torch.no_grad():
            if sigma > 0 and r <= 0:
                return torch.zeros_like(x0)
            return gaussian_update(problem.operator, x0, problem.y, sigma**2 / r**2 if sigma > 0
                                   else 0.0) - x0
