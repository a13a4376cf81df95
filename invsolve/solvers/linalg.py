"""Linear algebra on operators shared by solvers: Gram solves, proximal steps, pseudo-inverses.

Decomposable operators (deepinv ``DecomposablePhysics``: inpainting, BlurFFT, MRI, operators.Matrix)
get closed forms through their SVD; other linear operators use deepinv's per-sample conjugate gradient.

Singular-value floor: directions whose singular value is below ``floor`` times the largest are treated
as unobserved (s = 0). Without it a noiseless deblurring divides by singular values near 1e-20 and
returns values in the hundreds. The official DDRM zeroes 1-D blur singular values below 3e-2 (so 2-D
products below about 1e-3) and general ones below 1e-3; ``SVD_FLOOR`` = 1e-3 relative is that choice.
"""

from __future__ import annotations

import torch
from deepinv.optim.linear import conjugate_gradient
from deepinv.physics import DecomposablePhysics, LinearPhysics
from torch import Tensor


def require_linear(operator, solver: str) -> LinearPhysics:
    if not isinstance(operator, LinearPhysics):
        raise ValueError(f"{solver} needs a linear operator (deepinv LinearPhysics with A_adjoint); "
                         f"got {type(operator).__name__}: try dps, daps or reddiff")
    return operator


def require_svd(operator, solver: str) -> DecomposablePhysics:
    if not isinstance(operator, DecomposablePhysics):
        raise ValueError(f"{solver} needs a decomposable operator (an SVD: deepinv DecomposablePhysics such "
                         "as Inpainting, BlurFFT, MRI, Denoising, or operators.Matrix); got "
                         f"{type(operator).__name__}: try pigdm, diffpir or dps")
    return operator


def require_gaussian(problem, solver: str) -> float:
    """The problem's Gaussian noise std (0 if noiseless); a clear error for other noise models."""
    if problem.noise_sigma is None:
        raise ValueError(f"{solver} assumes Gaussian measurement noise; try dps for Poisson noise")
    return problem.noise_sigma


SVD_FLOOR = 1e-3


def singular_values(operator: DecomposablePhysics, floor: float = SVD_FLOOR) -> Tensor:
    """|s| of a decomposable operator (its ``mask``, broadcast like U^T y) with the floor applied:
    entries below ``floor * max |s|`` are set to 0 (unobserved)."""
    m = operator.mask
    s = m.abs() if torch.is_tensor(m) else torch.tensor(abs(float(m)))
    return s.masked_fill(s < floor * s.max(), 0.0)


def pinv(operator: LinearPhysics, y: Tensor, floor: float = SVD_FLOOR) -> Tensor:
    """A^+ y with the singular-value floor (decomposable operators); deepinv's ``A_dagger`` otherwise."""
    if isinstance(operator, DecomposablePhysics):
        s = singular_values(operator, floor).to(y.real.dtype)
        inv = torch.where(s > 0, 1.0 / s.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
        m = operator.mask
        phase = m / m.abs().clamp_min(torch.finfo(s.dtype).tiny) if torch.is_tensor(m) and m.is_complex() else 1
        return operator.V(operator.U_adjoint(y) * inv * (phase.conj() if torch.is_tensor(phase) else 1))
    return operator.A_dagger(y)


def gram_solve(operator: LinearPhysics, v: Tensor, r2: float, s2: float, max_iter: int = 200,
               floor: float = SVD_FLOOR) -> Tensor:
    """Solve (r2 A A^T + s2 I) u = v for u (y-shaped), per sample.

    Closed form U diag(1 / (r2 s^2 + s2)) U^T v for decomposable operators, with singular values
    below the floor treated as 0 (directions with r2 s^2 + s2 = 0 carry no information and get 0);
    conjugate gradient otherwise.
    """
    if isinstance(operator, DecomposablePhysics):
        s = singular_values(operator, floor)
        denom = r2 * (s * s).to(v.real.dtype) + s2
        inv = torch.where(denom > 0, 1.0 / denom.clamp_min(torch.finfo(denom.dtype).tiny),
                          torch.zeros_like(denom))
        return operator.U(inv * operator.U_adjoint(v))
    if s2 <= 0 and r2 <= 0:
        raise ValueError("gram_solve needs r2 > 0 or s2 > 0")
    # deepinv's default eps = 1e-8 in CG's step-size denominators stalls the iteration once p^T A p
    # falls below it (a few digits into any small-scale system): sr4 at 32 x 32 then ran all 200
    # iterations to a relative residual of 7e-4, where eps = tiny converges in ~12 to 5e-7.
    tiny = torch.finfo(v.real.dtype).tiny
    return conjugate_gradient(lambda u: r2 * operator.A_A_adjoint(u) + s2 * u, v, max_iter=max_iter,
                              tol=1e-6, eps=tiny, parallel_dim=0)


def adjoint_gram_solve(operator: LinearPhysics, v: Tensor, r2: float, s2: float, max_iter: int = 200,
                       floor: float = SVD_FLOOR) -> Tensor:
    """A^T (r2 A A^T + s2 I)^-1 v (x-shaped), per sample: the Gram solve followed by the adjoint.

    Decomposable operators: V diag(s / (r2 s^2 + s2)) U^T v with the floored singular values on both
    sides, so a direction below the floor contributes nothing (``gram_solve`` then ``A_adjoint`` would
    weigh it by its tiny unfloored s / s2). At s2 = 0 this is A^+ v / r2. Other linear operators:
    ``A_adjoint(gram_solve(...))``.
    """
    if isinstance(operator, DecomposablePhysics):
        s = singular_values(operator, floor).to(v.real.dtype)
        denom = r2 * s * s + s2
        gain = torch.where(s > 0, s / denom.clamp_min(torch.finfo(denom.dtype).tiny), torch.zeros_like(s))
        m = operator.mask
        if torch.is_tensor(m) and m.is_complex():  # the phase of a complex mask: A^T = V conj(m) U^T
            gain = gain * (m / m.abs().clamp_min(torch.finfo(s.dtype).tiny)).conj()
        return operator.V(gain * operator.U_adjoint(v))
    return operator.A_adjoint(gram_solve(operator, v, r2, s2, max_iter=max_iter, floor=floor))


def prox_data(operator: LinearPhysics, z: Tensor, y: Tensor, rho: float) -> Tensor:
    """argmin_x ||y - A x||^2 + rho ||x - z||^2 (deepinv's prox_l2 with gamma = 1 / rho).

    rho = 0 is the limit: the projection z + A^+ (y - A z) onto {A x = y}.
    """
    if rho <= 0:
        return z + operator.A_dagger(y - operator.A(z))
    return operator.prox_l2(z, y, 1.0 / rho)
