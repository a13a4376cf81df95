"""Linear algebra on operators shared by solvers: Gram solves, proximal steps, pseudo-inverses.

Decomposable operators (deepinv ``DecomposablePhysics``: inpainting, BlurFFT, MRI, operators.Matrix)
get closed forms through their SVD; other linear operators use deepinv's per-sample conjugate gradient.

Singular-value floor: directions whose singular value is below ``floor`` times the largest are treated
as unobserved (s = 0). Without it a noiseless deblurring divides by singular values near 1e-20 and
returns values in the hundreds. The official DDRM zeroes 1-D blur singular values below 3e-2 (so 2-D
products below about 1e-3) and general ones below 1e-3; ``SVD_FLOOR`` = 1e-3 relative is that choice.
"""

from __future__ import annotations

import deepinv.physics as dp
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


def has_pseudo_inverse(operator) -> bool:
    """Whether ``operator.A_dagger(y)`` works from y alone: a linear operator, or one whose class
    defines its own ``A_dagger``. deepinv's generic ``Physics.A_dagger`` of a nonlinear operator
    (e.g. phase retrieval) runs gradient descent that needs a starting point and fails without one."""
    if isinstance(operator, LinearPhysics):
        return True
    own = getattr(type(operator), "A_dagger", None)
    return own is not None and own is not dp.Physics.A_dagger


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
               floor: float = SVD_FLOOR, *, init: Tensor | None = None, tol: float = 1e-6) -> Tensor:
    """Solve (r2 A A^T + s2 I) u = v for u (y-shaped), per sample.

    Closed form U diag(1 / (r2 s^2 + s2)) U^T v for decomposable operators, with singular values
    below the floor treated as 0 (directions with r2 s^2 + s2 = 0 carry no information and get 0);
    conjugate gradient otherwise, from ``init`` (a previous solution: a warm start) or 0, until the
    residual is below ``tol`` times ||v`` or after ``max_iter`` iterations.
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
                              tol=tol, eps=tiny, parallel_dim=0, init=init)


def adjoint_gram_solve(operator: LinearPhysics, v: Tensor, r2: float, s2: float, max_iter: int = 200,
                       floor: float = SVD_FLOOR, *, init: Tensor | None = None, tol: float = 1e-6,
                       normal: bool = False) -> Tensor:
    """A^T (r2 A A^T + s2 I)^-1 v (x-shaped), per sample: the Gram solve followed by the adjoint.

    Decomposable operators: V diag(s / (r2 s^2 + s2)) U^T v with the floored singular values on both
    sides, so a direction below the floor contributes nothing (``gram_solve`` then ``A_adjoint`` would
    weigh it by its tiny unfloored s / s2). At s2 = 0 this is A^+ v / r2. Other linear operators:
    ``A_adjoint(gram_solve(...))``, or with ``normal=True`` (or an x-shaped ``init``) conjugate
    gradient on the normal equations (r2 A^T A + s2 I) w = A^T v, the same w (push-through identity),
    started from ``init`` and stopped at ``tol`` relative or ``max_iter`` (see ``NormalSolver``).
    """
    if isinstance(operator, DecomposablePhysics):
        s = singular_values(operator, floor).to(v.real.dtype)
        denom = r2 * s * s + s2
        gain = torch.where(s > 0, s / denom.clamp_min(torch.finfo(denom.dtype).tiny), torch.zeros_like(s))
        m = operator.mask
        if torch.is_tensor(m) and m.is_complex():  # the phase of a complex mask: A^T = V conj(m) U^T
            gain = gain * (m / m.abs().clamp_min(torch.finfo(s.dtype).tiny)).conj()
        return operator.V(gain * operator.U_adjoint(v))
    if normal or init is not None:
        return normal_solve(operator, operator.A_adjoint(v), r2, s2, init, tol, max_iter)
    return operator.A_adjoint(gram_solve(operator, v, r2, s2, max_iter=max_iter, floor=floor))


def normal_solve(operator: LinearPhysics, b: Tensor, r2: float, s2: float, init: Tensor | None = None,
                 tol: float = 1e-6, max_iter: int = 200) -> Tensor:
    """Solve (r2 A^T A + s2 I) w = b (x-shaped) per sample by conjugate gradient from ``init`` or 0."""
    if s2 <= 0 and r2 <= 0:
        raise ValueError("normal_solve needs r2 > 0 or s2 > 0")
    tiny = torch.finfo(b.real.dtype).tiny
    return conjugate_gradient(lambda w: r2 * operator.A_adjoint_A(w) + s2 * w, b, max_iter=max_iter,
                              tol=tol, eps=tiny, parallel_dim=0, init=init)


class NormalSolver:
    """A^T (r2 A A^T + s2 I)^-1 v for the sequence of systems a guided sampler solves, one per step.

    For decomposable operators this is the closed form of ``adjoint_gram_solve``. For the others
    (CT, valid-padded blur, PDE maps) it is conjugate gradient on the normal equations
    (r2 A^T A + s2 I) w = A^T v, warm-started from the previous step's w, to a relative residual
    ``tol`` or ``max_iter`` iterations. Why not CG on the Gram system in y-space, then A^T: on 64 x 64
    sparse-view CT (30 views, sigma_y = 0.01, PiGDM's r^2 = 0.25 ... 0.03) that ran its 200
    iterations every step and stopped at a relative residual of 1e-2 in x-space, 30% from the exact
    w; CG on the normal equations reaches that residual in 10-20 iterations and 1e-4 in 30-60, and the
    previous step's w is a good start since x0_hat and r^2 change little between steps. The
    remaining error lives in directions with r2 s^2 ~ s2 (the edge of what the noise lets one
    see), which CG resolves last whatever the formulation; truncating there is a mild spectral
    regulariser, like the singular-value floor of the decomposable case. ``iterations`` counts
    the normal-operator products made so far (for benchmarks).
    """

    def __init__(self, operator: LinearPhysics, floor: float = SVD_FLOOR, tol: float = 1e-3,
                 max_iter: int = 50, warm_start: bool = True):
        self.operator, self.floor, self.tol, self.max_iter = operator, floor, tol, max_iter
        self.warm_start = warm_start
        self.decomposable = isinstance(operator, DecomposablePhysics)
        self.last: Tensor | None = None
        self.iterations = 0

    def __call__(self, v: Tensor, r2: float, s2: float) -> Tensor:
        op = self.operator
        if self.decomposable:
            return adjoint_gram_solve(op, v, r2, s2, floor=self.floor)

        def normal_op(w: Tensor) -> Tensor:
            self.iterations += 1
            return r2 * op.A_adjoint_A(w) + s2 * w

        init = self.last if self.warm_start else None
        tiny = torch.finfo(v.real.dtype).tiny
        w = conjugate_gradient(normal_op, op.A_adjoint(v), max_iter=self.max_iter, tol=self.tol, eps=tiny,
                               parallel_dim=0, init=init)
        self.last = w.detach()
        return w


def prox_data(operator: LinearPhysics, z: Tensor, y: Tensor, rho: float) -> Tensor:
    """argmin_x ||y - A x||^2 + rho ||x - z||^2 (deepinv's prox_l2 with gamma = 1 / rho).

    rho = 0 is the limit: the projection z + A^+ (y - A z) onto {A x = y}.
    """
    if rho <= 0:
        return z + operator.A_dagger(y - operator.A(z))
    return operator.prox_l2(z, y, 1.0 / rho)


def gaussian_update(operator: LinearPhysics, x: Tensor, y: Tensor, s2: float,
                    floor: float = SVD_FLOOR, *, guess: Tensor | None = None, tol: float = 1e-6) -> Tensor:
    """x + A^T (A A^T + s2 I)^-1 (y - A x), per sample (x-shaped, real).

    The mean of N(x, r^2 I) conditioned on y = A x' + N(0, sigma^2 I) when s2 = sigma^2 / r^2
    (equivalently argmin_z ||y - A z||^2 + s2 ||z - x||^2, the proximal step of the data term).
    s2 = 0 is the limit: the projection x + A^+ (y - A x) onto {A z = y}, with the singular-value
    floor (directions below it keep x). Decomposable operators in closed form, others by conjugate
    gradient (``adjoint_gram_solve`` / deepinv's ``A_dagger``); with ``guess`` (an estimate of the
    result, e.g. the previous solve of a sequence) on the normal equations started from it, to a
    relative residual ``tol``.
    """
    r = y - operator.A(x)
    if s2 <= 0:
        step = pinv(operator, r, floor)
    else:
        init = None if guess is None else (guess - x).detach()  # the closed forms ignore it
        step = adjoint_gram_solve(operator, r, 1.0, s2, floor=floor, init=init, tol=tol)
    return x + step.real.to(x.dtype)


def operator_norm2(operator, x_shape: tuple[int, ...], like: Tensor, batch: int, rtol: float = 1e-9,
                   max_iter: int = 1000) -> Tensor:
    """Per-sample ||A||^2 (the largest eigenvalue of A^T A) by power iteration, shape (batch,).

    Stops when the Rayleigh quotient changes by less than ``rtol`` relative (deepinv's
    ``compute_sqnorm`` stops on an absolute change, which ends too early for a small or rank-one
    operator; seen on the mixture benchmark: 3e-9 for ||A||^2 = 0.49). The same fixed start vector for every sample, so
    the result does not depend on the batch.
    """
    x = torch.randn(x_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x.to(dtype=like.dtype, device=like.device).expand(batch, *x_shape).clone()
    dims = tuple(range(1, x.ndim))
    norm2 = torch.zeros(batch, dtype=like.dtype, device=like.device)
    with torch.no_grad():
        for _ in range(max_iter):
            x = x / x.pow(2).sum(dims, keepdim=True).sqrt().clamp_min(1e-300)
            y = operator.A_adjoint_A(x).real
            new = (x * y).sum(dims)  # Rayleigh quotient of the unit x
            done = bool(((new - norm2).abs() <= rtol * new.abs()).all())
            norm2, x = new, y
            if done:
                break
    if not bool((norm2 > 0).all()):
        raise ValueError("the operator maps everything to 0 (||A|| = 0): nothing to reconstruct from")
    return norm2
