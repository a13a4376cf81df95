"""Steady Darcy flow  -div(a grad u) = f  on [0, 1]^2, u = 0 on the boundary (the FNO / DiffusionPDE
benchmark: Li et al., FNO, arXiv 2010.08895, Sec. 5.2; Huang et al., DiffusionPDE, arXiv 2406.17763).

Discretisation (cell-centred finite volumes, N x N cells of width h = 1/N, a and u given per cell):

    sum_{faces f of cell i} T_f (u_i - u_j(f)) + sum_{boundary faces of i} 2 a_i u_i = f_i h^2,

with face transmissibility T_f the **harmonic** mean 2 a_i a_j / (a_i + a_j) of the two cells (default;
exact flux continuity for piecewise-constant a, the right choice for the thresholded {12, 3} fields) or
the arithmetic mean (a_i + a_j)/2 (``face="arithmetic"``). A boundary face sits h/2 from the centre,
hence the factor 2. The matrix K(a) is symmetric positive definite; the scheme is second-order accurate
for smooth a and u (checked in ``tests/test_pde_darcy.py``).

Forward solve u = K(a)^{-1} f h^2, per batch element, by
  * ``solver="direct"``: ``scipy.sparse.linalg.splu`` on the CPU (float64), or
  * ``solver="cg"``: batched Jacobi-preconditioned conjugate gradients in torch on the input's device,
    matrix-free (the 5-point stencil below; torch has no sparse direct solver, and CG keeps CUDA inputs
    on the GPU);
``"auto"`` picks direct on CPU and CG elsewhere. Gradients w.r.t. a come from the adjoint-state method
(one extra solve K lambda = dL/du, K symmetric) in a custom ``torch.autograd.Function``; nothing is
back-propagated through solver iterations, so memory is O(N^2) whatever the solver does.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from deepinv.physics import GaussianNoise, Physics
from torch import Tensor

from ..registry import register

FACES = ("harmonic", "arithmetic")


def check_permeability(a: Tensor, size: int | None = None, positive: bool = True) -> None:
    """Raise ValueError unless a is a finite (B, N, N) tensor (N = size if given), > 0 if ``positive``."""
    if not isinstance(a, Tensor):
        raise TypeError(f"permeability must be a torch.Tensor, got {type(a).__name__}")
    if a.ndim != 3 or a.shape[-1] != a.shape[-2] or (size is not None and a.shape[-1] != size):
        want = f"(B, {size}, {size})" if size is not None else "(B, N, N)"
        raise ValueError(f"Darcy expects a permeability grid of shape {want}, got {tuple(a.shape)}")
    if a.shape[-1] < 2:
        raise ValueError(f"Darcy needs at least 2 x 2 cells, got {tuple(a.shape[-2:])}")
    if not torch.isfinite(a).all():
        raise ValueError("Darcy permeability contains NaN or Inf values")
    if positive and not (a > 0).all():
        raise ValueError(f"Darcy permeability must be > 0 everywhere (min is {a.min().item():.3g}); "
                         "use param='log' to optimise log-permeability instead")


def _face_mean(a1: Tensor, a2: Tensor, face: str) -> Tensor:
    return 2 * a1 * a2 / (a1 + a2) if face == "harmonic" else 0.5 * (a1 + a2)


def _face_mean_grads(a1: Tensor, a2: Tensor, face: str) -> tuple[Tensor, Tensor]:
    if face == "harmonic":
        s2 = (a1 + a2) ** 2
        return 2 * a2**2 / s2, 2 * a1**2 / s2
    half = torch.full_like(a1, 0.5)
    return half, half


def boundary_faces(n: int, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Tensor:
    """(N, N) count of boundary faces of each cell (2 at corners, 1 on edges, 0 inside)."""
    e = torch.zeros(n, dtype=dtype, device=device)
    e[0] += 1
    e[-1] += 1
    return e[:, None] + e[None, :]


def transmissibilities(a: Tensor, face: str = "harmonic") -> tuple[Tensor, Tensor]:
    """Face coefficients of the stencil for a (B, N, N): tx (B, N, N-1) between columns j, j+1 and
    ty (B, N-1, N) between rows i, i+1 (dimensionless: flux = T (u_i - u_j) for a face of length h)."""
    return _face_mean(a[..., :, :-1], a[..., :, 1:], face), _face_mean(a[..., :-1, :], a[..., 1:, :], face)


def apply_darcy(a: Tensor, u: Tensor, face: str = "harmonic") -> Tensor:
    """Matrix-free K(a) u for a, u of shape (B, N, N): the finite-volume operator (units of f h^2)."""
    tx, ty = transmissibilities(a, face)
    fx = tx * (u[..., :, :-1] - u[..., :, 1:])
    fy = ty * (u[..., :-1, :] - u[..., 1:, :])
    out = 2 * a * boundary_faces(a.shape[-1], a.dtype, a.device) * u
    out = out + torch.nn.functional.pad(fx, (0, 1)) - torch.nn.functional.pad(fx, (1, 0))
    out = out + torch.nn.functional.pad(fy, (0, 0, 0, 1)) - torch.nn.functional.pad(fy, (0, 0, 1, 0))
    return out


def darcy_diagonal(a: Tensor, face: str = "harmonic") -> Tensor:
    """Diagonal of K(a), shape (B, N, N) (the Jacobi preconditioner)."""
    tx, ty = transmissibilities(a, face)
    d = 2 * a * boundary_faces(a.shape[-1], a.dtype, a.device)
    d = d + torch.nn.functional.pad(tx, (0, 1)) + torch.nn.functional.pad(tx, (1, 0))
    return d + torch.nn.functional.pad(ty, (0, 0, 0, 1)) + torch.nn.functional.pad(ty, (0, 0, 1, 0))


def assemble(a: np.ndarray, face: str = "harmonic") -> sp.csc_matrix:
    """Sparse K(a) (N^2, N^2), row-major cell index i*N + j, for one permeability grid a (N, N)."""
    n = a.shape[0]
    a = np.asarray(a, dtype=np.float64)
    idx = np.arange(n * n).reshape(n, n)
    at = torch.from_numpy(a)[None]
    tx, ty = (t[0].numpy() for t in transmissibilities(at, face))
    rows, cols, vals = [], [], []
    for t, i, j in ((tx, idx[:, :-1], idx[:, 1:]), (ty, idx[:-1, :], idx[1:, :])):
        i, j, t = i.ravel(), j.ravel(), t.ravel()
        rows += [i, j, i, j]
        cols += [i, j, j, i]
        vals += [t, t, -t, -t]
    nb = boundary_faces(n).numpy()
    rows.append(idx.ravel())
    cols.append(idx.ravel())
    vals.append((2 * a * nb).ravel())
    return sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n * n, n * n))


def _solve_direct(a: Tensor, b: Tensor, face: str) -> Tensor:
    a_np = a.detach().to("cpu", torch.float64).numpy()
    b_np = b.detach().to("cpu", torch.float64).numpy()
    out = np.empty_like(b_np)
    n = a.shape[-1]
    for k in range(a_np.shape[0]):
        out[k] = spla.splu(assemble(a_np[k], face)).solve(b_np[k].ravel()).reshape(n, n)
    return torch.from_numpy(out).to(device=b.device, dtype=b.dtype)


def solve_cg(a: Tensor, b: Tensor, face: str = "harmonic", rtol: float = 1e-10,
             maxiter: int | None = None) -> Tensor:
    """Batched Jacobi-preconditioned CG for K(a) u = b, (B, N, N), in a's dtype and on a's device.

    Stops when every sample's residual is below ``rtol * |b|``; raises RuntimeError if ``maxiter``
    (default 20 N) iterations do not get there. Plain torch ops, so it could be differentiated by
    unrolling; ``darcy_solve`` never does that (see ``benchmarks/pde_darcy_adjoint.py`` for why).
    """
    maxiter = 20 * a.shape[-1] if maxiter is None else maxiter
    dinv = 1.0 / darcy_diagonal(a, face)
    u = torch.zeros_like(b)
    r = b.clone()
    z = dinv * r
    p = z.clone()
    rz = (r * z).sum((-2, -1), keepdim=True)
    bnorm = b.flatten(1).norm(dim=1).clamp_min(torch.finfo(b.dtype).tiny)
    for _ in range(maxiter):
        if (r.flatten(1).norm(dim=1) <= rtol * bnorm).all():
            return u
        kp = apply_darcy(a, p, face)
        alpha = rz / (p * kp).sum((-2, -1), keepdim=True)
        u = u + alpha * p
        r = r - alpha * kp
        z = dinv * r
        rz_new = (r * z).sum((-2, -1), keepdim=True)
        p = z + (rz_new / rz) * p
        rz = rz_new
    if (r.flatten(1).norm(dim=1) <= rtol * bnorm).all():
        return u
    raise RuntimeError(f"Darcy CG did not reach rtol={rtol} in {maxiter} iterations")


def _solve(a: Tensor, b: Tensor, face: str, solver: str, rtol: float) -> Tensor:
    if solver == "auto":
        solver = "direct" if a.device.type == "cpu" else "cg"
    if solver == "direct":
        return _solve_direct(a, b, face)
    if solver == "cg":
        return solve_cg(a, b, face, rtol=rtol)
    raise ValueError(f"unknown Darcy solver {solver!r}; choose 'direct', 'cg' or 'auto'")


class _DarcySolve(torch.autograd.Function):
    """u = K(a)^{-1} b with adjoint-state backward.

    For a loss L(u): lambda = K^{-1} dL/du (K = K^T), dL/db = lambda and
    dL/da = -lambda^T (dK/da) u, evaluated face by face: each face f between cells i, j contributes
    -(lambda_i - lambda_j)(u_i - u_j) dT_f/da, each boundary face of cell i contributes -2 lambda_i u_i.
    """

    @staticmethod
    def forward(a: Tensor, b: Tensor, face: str, solver: str, rtol: float) -> Tensor:
        return _solve(a, b, face, solver, rtol)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        a, _, face, solver, rtol = inputs
        ctx.save_for_backward(a, output)
        ctx.face, ctx.solver, ctx.rtol = face, solver, rtol

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor):
        a, u = ctx.saved_tensors
        face = ctx.face
        lam = _solve(a, g, face, ctx.solver, ctx.rtol)
        ga = -2 * boundary_faces(a.shape[-1], a.dtype, a.device) * lam * u
        gx = -(lam[..., :, :-1] - lam[..., :, 1:]) * (u[..., :, :-1] - u[..., :, 1:])
        gy = -(lam[..., :-1, :] - lam[..., 1:, :]) * (u[..., :-1, :] - u[..., 1:, :])
        dx1, dx2 = _face_mean_grads(a[..., :, :-1], a[..., :, 1:], face)
        dy1, dy2 = _face_mean_grads(a[..., :-1, :], a[..., 1:, :], face)
        ga = ga + torch.nn.functional.pad(gx * dx1, (0, 1)) + torch.nn.functional.pad(gx * dx2, (1, 0))
        ga = ga + torch.nn.functional.pad(gy * dy1, (0, 0, 0, 1)) + torch.nn.functional.pad(gy * dy2, (0, 0, 1, 0))
        return ga, lam, None, None, None


def darcy_solve(a: Tensor, f: float | Tensor = 1.0, face: str = "harmonic", solver: str = "auto",
                rtol: float = 1e-12) -> Tensor:
    """Pressure u (B, N, N) solving -div(a grad u) = f, u = 0 on the boundary of [0, 1]^2.

    Args:
        a: permeability per cell, (B, N, N), > 0 and finite (ValueError otherwise).
        f: source, a number or a (N, N) / (B, N, N) tensor (FNO/DiffusionPDE use f = 1).
        face: "harmonic" (default) or "arithmetic" face average of a.
        solver: "direct" (scipy splu, CPU), "cg" (torch, a's device) or "auto".
        rtol: relative residual tolerance of CG (ignored by the direct solver).
    Differentiable w.r.t. a (and f if a tensor) by the adjoint-state method.
    """
    check_permeability(a)
    if face not in FACES:
        raise ValueError(f"unknown face average {face!r}; choose one of {FACES}")
    n = a.shape[-1]
    b = torch.as_tensor(f, dtype=a.dtype, device=a.device) * torch.ones_like(a) / n**2
    return _DarcySolve.apply(a, b, face, solver, rtol)


class Darcy(Physics):
    """Darcy forward map x -> y: permeability (B, 1, N, N) to pressure u (B, 1, N, N) or sensor values.

    Args:
        size: grid size N (cells per side).
        f: source term (default 1, as FNO/DiffusionPDE).
        param: "a" (x is the permeability, must be > 0) or "log" (x = log a, any finite value).
        sensors: None for the full field, or the number of sensor cells, drawn once without replacement
            with ``torch.Generator().manual_seed(seed)``; then y has shape (B, sensors).
        seed: seed of the sensor locations.
        face, solver, rtol: see ``darcy_solve``.
        noise_sigma: std of the additive Gaussian measurement noise.
    """

    def __init__(self, size: int = 64, f: float = 1.0, param: str = "a", sensors: int | None = None,
                 seed: int = 0, face: str = "harmonic", solver: str = "auto", rtol: float = 1e-12,
                 noise_sigma: float = 0.0):
        if param not in ("a", "log"):
            raise ValueError(f"param must be 'a' or 'log', got {param!r}")
        if face not in FACES:
            raise ValueError(f"unknown face average {face!r}; choose one of {FACES}")
        if size < 2:
            raise ValueError(f"size must be >= 2, got {size}")
        super().__init__(noise_model=GaussianNoise(sigma=float(noise_sigma)))
        self.size, self.f, self.param, self.face, self.solver, self.rtol = size, f, param, face, solver, rtol
        self.n_sensors = sensors
        if sensors is not None:
            if not 0 < sensors <= size * size:
                raise ValueError(f"sensors must be in 1..{size * size}, got {sensors}")
            gen = torch.Generator().manual_seed(seed)
            idx = torch.randperm(size * size, generator=gen)[:sensors].sort().values
            self.register_buffer("sensor_index", idx)
        else:
            self.sensor_index = None

    def permeability(self, x: Tensor) -> Tensor:
        """a (B, N, N) from x (B, 1, N, N), with the shape/finiteness/positivity checks."""
        n = self.size
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, n, n):
            raise ValueError(f"Darcy expects x of shape (B, 1, {n}, {n}), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("Darcy input contains NaN or Inf values")
        a = torch.exp(x[:, 0]) if self.param == "log" else x[:, 0]
        check_permeability(a, n)
        return a

    def solution(self, x: Tensor) -> Tensor:
        """Full pressure field u (B, 1, N, N)."""
        return darcy_solve(self.permeability(x), self.f, self.face, self.solver, self.rtol)[:, None]

    def A(self, x: Tensor, **kw) -> Tensor:
        u = self.solution(x)
        if self.sensor_index is None:
            return u
        return u.flatten(1)[:, self.sensor_index.to(u.device)]


@register("darcy", "Darcy flow -div(a grad u)=1 on [0,1]^2: permeability (B,1,N,N) -> pressure; size, param")
def _build_darcy(size: int = 64, param: str = "a", noise_sigma: float = 0.0, **kw) -> Darcy:
    return Darcy(size=size, param=param, noise_sigma=noise_sigma, **kw)


@register("darcy_sensors", "Darcy flow observed at seeded sensor cells (default 500 per 128^2, scaled)")
def _build_darcy_sensors(size: int = 64, sensors: int | None = None, seed: int = 0, param: str = "a",
                         noise_sigma: float = 0.0, **kw) -> Darcy:
    if sensors is None:
        sensors = max(1, math.ceil(500 * size**2 / 128**2))
    return Darcy(size=size, sensors=sensors, seed=seed, param=param, noise_sigma=noise_sigma, **kw)
