"""MCG: manifold constrained gradients.

Chung, Sim, Ryu & Ye 2022, "Improving Diffusion Models for Inverse Problems using Manifold Constraints",
NeurIPS 2022, arXiv 2206.00941, Algorithm 1 / Eq. 14-16: the DPS-style manifold-constrained gradient
step on ||y - A x0_hat(x_t)|| followed by a projection of x_{i-1} onto the noised measurement set
{A x = alpha_{i-1} y + sigma_{i-1} A z}. The projection assumes noiseless y; for noisy problems it
amplifies noise (the paper's remark, and DPS, Sec. 4), so ``project="auto"`` projects only when y is
noiseless and otherwise runs the gradient step alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .dps import DPS
from .linalg import require_linear
from .registry import register


@register
@dataclass
class MCG(DPS):
    """MCG = DPS's manifold-constrained gradient + range-space projection (Eq. 16). Linear operators only."""

    name = "mcg"
    description = "Manifold constrained gradients + projection (Chung et al. 2022)"

    steps: int = 1000
    zeta: float = 1.0
    project_mode: str = "auto"

    def validate(self) -> None:
        super().validate()
        if self.project_mode not in ("auto", "always", "never"):
            raise ValueError(f"mcg: project_mode must be 'auto', 'always' or 'never', got {self.project_mode!r}")

    def run(self, problem, prior, gens):
        require_linear(problem.operator, self.name)
        self._project = self.project_mode == "always" or (
            self.project_mode == "auto" and problem.noise_sigma == 0.0)
        x, info = super().run(problem, prior, gens)
        info["projected"] = self._project
        return x, info

    def project(self, problem, x: Tensor, a_s: Tensor, s_s: Tensor, gens) -> Tensor:
        if not self._project:
            return x
        op = problem.operator
        # Eq. 15: the measurement noised to the level of x_{i-1}: y_i = alpha y + sigma A z.
        y_i = a_s * problem.y + s_s * op.A(self.randn(gens, problem))
        return x - op.A_dagger(op.A(x) - y_i)  # Eq. 16: (I - A^+ A) x + A^+ y_i
