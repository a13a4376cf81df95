"""The trivial baseline: A^+ y, clipped to the prior's data range (no prior, no network call).

For inpainting A^+ y is the zero-filled measurement; for deblurring it is the inverse filter with the
singular-value floor of ``linalg.pinv``; for other linear operators deepinv's least-squares
``A_dagger``. For a nonlinear operator there is no pseudo-inverse: the baseline is the constant
image at the centre of the prior's data range. Every posterior solver should beat it; the robustness
matrix (experiments/robustness.py) flags any that falls more than 1 dB below it without an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from deepinv.physics import LinearPhysics
from torch import Tensor

from .base import Solver
from .linalg import SVD_FLOOR, pinv
from .registry import register


@register
@dataclass
class PInv(Solver):
    """A^+ y (``floor``: relative singular-value floor), clipped to the prior's data range; 0 NFE."""

    name = "pinv"
    baseline = True
    description = "Baseline: pseudo-inverse A^+ y clipped to the data range (no prior)"

    steps: int = 1
    floor: float = SVD_FLOOR

    def expected_nfe(self) -> int:
        return 0

    def run(self, problem, prior, gens) -> tuple[Tensor, dict]:
        like = self.like(problem)
        op = problem.operator
        if isinstance(op, LinearPhysics):
            with torch.no_grad():
                x = pinv(op, problem.y, self.floor).real.to(like.dtype)
            kind = "pseudo-inverse"
        else:
            x = torch.full((len(problem), *problem.x_shape), float(prior.data_center), dtype=like.dtype,
                           device=like.device)
            kind = "constant (nonlinear operator)"
        if prior.data_range is not None:
            x = x.clamp(*prior.data_range)
        return x, {"baseline": kind}
