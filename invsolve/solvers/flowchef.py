"""FlowChef: steering rectified flow models in the vector field, gradient-free.

Patel, Wen, Metaxas & Yang 2024, "Steering Rectified Flow Models in the Vector Field for Controlled
Image Generation", arXiv 2412.00100, Sec. 4 and Algorithm 1. On the rectified-flow path with data at
t = 0, x_t = (1 - t) x0 + t eps (velocity v = eps - x0), the clean estimate is x0_hat = x_t - t v.
Because the learned vector field of a (nearly) straight flow barely changes with x_t, the gradient of
the cost L(x0_hat) with respect to x_t is taken as the gradient with respect to x0_hat (the Jacobian
of v is dropped: no backpropagation through the network). Each step:
    v = v(x_t, t);  x0_hat = x_t - t v;  x_t <- x_t - s grad L(x0_hat);  x_{t - dt} = x_t - dt v,
with L(x) = ||y - A(x)||^2 / 2 per sample, and no guidance at the last step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invsolve import paths as P

from .base import Solver
from .registry import register


@register
@dataclass
class FlowChef(Solver):
    """FlowChef (Alg. 1): ``steps`` Euler steps from t = 1 to 0, one network call each (NFE = steps);
    ``inner`` guidance steps of size ``step`` per time step (they reuse v, no extra NFE). The cost is
    the plain squared residual (the method ignores the noise level). Default step 1.0 on
    ||y - A x0_hat||^2 / 2 (the paper's images use a mean-squared loss with scale 100-1000, i.e. a
    comparable per-pixel step)."""

    name = "flowchef"
    description = "Gradient-free steering of rectified flows in the vector field (Patel et al. 2024)"

    steps: int = 100
    step: float = 1.0
    inner: int = 1

    def validate(self) -> None:
        if self.step < 0 or self.inner < 0:
            raise ValueError("flowchef: step and inner must be >= 0")

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        like = self.like(problem)
        path = P.LinearFlow()  # data at t = 0, noise at t = 1 (rectified flow)
        ts = torch.linspace(1.0, 0.0, self.steps + 1, dtype=torch.float64)
        ts[0] = path.t_max
        x = path.t_max * self.randn(gens, problem)  # x_1 ~ N(0, I) (scaled to the path's end)
        for i in self.iterate():
            t, t_next = float(ts[i]), float(ts[i + 1])
            tb = torch.full((len(problem),), t, dtype=like.dtype, device=like.device)
            with torch.no_grad():
                vel = prior.velocity_at(x, tb, path)
            if i < self.steps - 1:
                for _ in range(self.inner):
                    x0 = (x - t * vel).detach().requires_grad_(True)  # x0_hat with v frozen
                    loss = 0.5 * problem.residual(x0).abs().pow(2).reshape(len(problem), -1).sum(1)
                    (grad,) = torch.autograd.grad(loss.sum(), x0)  # per-sample gradients, no network VJP
                    x = x - self.step * grad  # steer x_t in the vector field
            with torch.no_grad():
                x = x + (t_next - t) * vel  # Euler step with the unsteered velocity
            self.guard(x, i, "step")
        return x.detach(), {}
