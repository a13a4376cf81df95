"""2-D incompressible Navier-Stokes in vorticity form on the torus [0, 2 pi)^2, pseudo-spectral.

    d_t w + u . grad w = nu Delta w + g(y),   u = (d_y psi, -d_x psi),   -Delta psi = w,

with the InverseBench setup as defaults (Zheng et al., InverseBench, arXiv 2503.11043, Sec. 3:
Re = 200, i.e. nu = 1/200, Kolmogorov forcing g = -4 cos(4 y), evolve one time unit, observe the final
vorticity subsampled by 2, 4 or 8), the solver family of FNO's data (Li et al., arXiv 2010.08895, App.).

Time stepping (``step``): Crank-Nicolson for the viscous term, Heun (explicit trapezoidal RK2) for
advection + forcing; the nonlinear product is formed in physical space and de-aliased with the 2/3 rule.
Arrays are (B, N, N) indexed [y, x]. The step size is fixed (batch results never depend on the batch);
every step checks the advective CFL number max(|u| + |v|) dt / h and raises ValueError if it exceeds
``cfl_max`` or the field is not finite, so an unstable run never returns NaN silently.

Gradients: plain torch autograd through the steps, with ``torch.utils.checkpoint`` over segments of
~sqrt(steps) steps, so only the segment boundaries (plus one segment's activations) are stored:
memory grows like sqrt(steps), not with every step. ``differentiable=False`` makes the map a black box
(run without a graph; backward raises), for derivative-free solvers.
"""

from __future__ import annotations

import math

import torch
from deepinv.physics import GaussianNoise, Physics
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..registry import register
from .grid import dealias_mask, torus_nodes, torus_wavenumbers


class NSSolver:
    """Pseudo-spectral vorticity solver on an N x N torus grid; tensors follow the input's device/dtype.

    Args:
        size: grid points per side N.
        nu: kinematic viscosity (1/Re).
        forcing: None for no forcing, "kolmogorov" for -4 cos(4 y), or a (N, N) tensor g(y, x).
        dt: time step (fixed).
        cfl_max: largest allowed advective CFL number (ValueError above it).
    """

    def __init__(self, size: int, nu: float = 1 / 200, forcing: str | Tensor | None = "kolmogorov",
                 dt: float = 5e-3, cfl_max: float = 1.0):
        if size < 4 or size % 2:
            raise ValueError(f"size must be an even number >= 4, got {size}")
        if not (dt > 0 and math.isfinite(dt)):
            raise ValueError(f"dt must be a positive number, got {dt}")
        if nu < 0:
            raise ValueError(f"viscosity must be >= 0, got {nu}")
        self.size, self.nu, self.dt, self.cfl_max = size, nu, dt, cfl_max
        if isinstance(forcing, str):
            if forcing != "kolmogorov":
                raise ValueError(f"unknown forcing {forcing!r}; use 'kolmogorov', None or a tensor")
            y, _ = torus_nodes(size)
            forcing = -4 * torch.cos(4 * y)
        elif forcing is not None and tuple(forcing.shape) != (size, size):
            raise ValueError(f"forcing must have shape ({size}, {size}), got {tuple(forcing.shape)}")
        self.forcing = forcing
        self.h = 2 * math.pi / size
        self._cache: dict = {}

    def _consts(self, dtype: torch.dtype, device: torch.device) -> dict:
        key = (dtype, device)
        if key not in self._cache:
            ky, kx = torus_wavenumbers(self.size, dtype=dtype, device=device)
            k2 = kx**2 + ky**2
            inv_k2 = torch.where(k2 > 0, 1.0 / k2.clamp_min(1.0), torch.zeros_like(k2))
            cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
            f_hat = (torch.fft.rfft2(self.forcing.to(device=device, dtype=dtype))
                     if self.forcing is not None else torch.zeros(k2.shape, dtype=cdt, device=device))
            half = 0.5 * self.dt * self.nu * k2
            self._cache[key] = {
                "ikx": (1j * kx).to(cdt), "iky": (1j * ky).to(cdt), "inv_k2": inv_k2.to(cdt),
                "mask": dealias_mask(self.size, device=device).to(cdt), "f_hat": f_hat,
                "lhs": (1.0 / (1.0 + half)).to(cdt), "rhs": (1.0 - half).to(cdt)}
        return self._cache[key]

    def velocity(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Velocity (u, v), each (B, N, N), of the vorticity w (B, N, N)."""
        c = self._consts(w.dtype, w.device)
        psi = torch.fft.rfft2(w) * c["inv_k2"]
        n = (self.size, self.size)
        return torch.fft.irfft2(c["iky"] * psi, s=n), torch.fft.irfft2(-c["ikx"] * psi, s=n)

    def _rhs(self, w_hat: Tensor, c: dict, check: bool) -> Tensor:
        """Spectral -u.grad w + g (de-aliased) for w_hat (B, N, N//2+1)."""
        n = (self.size, self.size)
        psi = w_hat * c["inv_k2"]
        u = torch.fft.irfft2(c["iky"] * psi, s=n)
        v = torch.fft.irfft2(-c["ikx"] * psi, s=n)
        if check:
            self._check_cfl(u, v)
        wx = torch.fft.irfft2(c["ikx"] * w_hat, s=n)
        wy = torch.fft.irfft2(c["iky"] * w_hat, s=n)
        return -c["mask"] * torch.fft.rfft2(u * wx + v * wy) + c["f_hat"]

    def _check_cfl(self, u: Tensor, v: Tensor) -> None:
        speed = (u.detach().abs() + v.detach().abs()).amax()
        cfl = float(speed) * self.dt / self.h
        if not math.isfinite(cfl):
            raise ValueError("Navier-Stokes state became NaN/Inf; reduce dt or check the initial vorticity")
        if cfl > self.cfl_max:
            raise ValueError(f"Navier-Stokes time step dt={self.dt:g} is CFL-unstable on this state "
                             f"(CFL = max(|u|+|v|) dt/h = {cfl:.2f} > {self.cfl_max}); use dt <= "
                             f"{self.dt * self.cfl_max / cfl:.3g}")

    def step_hat(self, w_hat: Tensor, check: bool = True) -> Tensor:
        """One Crank-Nicolson / Heun step on the spectral vorticity (B, N, N//2+1)."""
        c = self._consts(w_hat.real.dtype, w_hat.device)
        dt = self.dt
        n0 = self._rhs(w_hat, c, check)
        w_pred = c["lhs"] * (c["rhs"] * w_hat + dt * n0)
        n1 = self._rhs(w_pred, c, False)
        return c["lhs"] * (c["rhs"] * w_hat + 0.5 * dt * (n0 + n1))

    def _steps(self, w_hat: Tensor, m: int) -> Tensor:
        for _ in range(m):
            w_hat = self.step_hat(w_hat)
        return w_hat

    def evolve(self, w0: Tensor, t: float, checkpoint_segments: bool = True) -> Tensor:
        """Vorticity at time t from w0 (B, N, N), in ceil(t/dt) steps (the last dt is not shortened:
        t must be a multiple of dt up to 1e-9 relative, else ValueError)."""
        if w0.ndim != 3 or tuple(w0.shape[1:]) != (self.size, self.size):
            raise ValueError(f"expected vorticity of shape (B, {self.size}, {self.size}), got {tuple(w0.shape)}")
        if not torch.isfinite(w0).all():
            raise ValueError("initial vorticity contains NaN or Inf values")
        steps = round(t / self.dt)
        if abs(steps * self.dt - t) > 1e-9 * max(t, 1.0):
            raise ValueError(f"t={t} is not a multiple of dt={self.dt}")
        w_hat = torch.fft.rfft2(w0)
        if checkpoint_segments and torch.is_grad_enabled() and w0.requires_grad and steps > 1:
            seg = max(1, math.isqrt(steps))
            done = 0
            while done < steps:
                m = min(seg, steps - done)
                w_hat = checkpoint(self._steps, w_hat, m, use_reentrant=False)
                done += m
        else:
            w_hat = self._steps(w_hat, steps)
        return torch.fft.irfft2(w_hat, s=(self.size, self.size))

    def trajectory(self, w0: Tensor, t: float, snapshots: int) -> Tensor:
        """Vorticity at ``snapshots + 1`` equally spaced times 0..t, shape (B, snapshots + 1, N, N)."""
        out = [w0]
        w = w0
        for _ in range(snapshots):
            w = self.evolve(w, t / snapshots)
            out.append(w)
        return torch.stack(out, 1)


class _BlackBox(torch.autograd.Function):
    """Identity in the forward pass whose backward refuses: marks a non-differentiable simulator."""

    @staticmethod
    def forward(y: Tensor, x: Tensor) -> Tensor:
        return y.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, g: Tensor):
        raise RuntimeError("this Navier-Stokes operator was built with differentiable=False (black box): "
                           "it has no gradient; use a derivative-free solver or differentiable=True")


class NavierStokes(Physics):
    """Initial vorticity w0 (B, 1, N, N) -> final vorticity w(T) subsampled, (B, 1, N/s, N/s).

    Args:
        size: grid N; re: Reynolds number (nu = 1/re); t_final: T; dt: time step;
        subsample: observation stride s in {1, 2, 4, 8, ...} (N divisible by s);
        forcing: "kolmogorov" (-4 cos 4y), None, or a (N, N) tensor;
        differentiable: False makes A a black box (no gradient);
        cfl_max: see ``NSSolver``; noise_sigma: Gaussian measurement noise std.
    """

    def __init__(self, size: int = 128, re: float = 200.0, t_final: float = 1.0, dt: float = 5e-3,
                 subsample: int = 2, forcing: str | Tensor | None = "kolmogorov",
                 differentiable: bool = True, cfl_max: float = 1.0, noise_sigma: float = 0.0):
        if subsample < 1 or size % subsample:
            raise ValueError(f"subsample must be >= 1 and divide size={size}, got {subsample}")
        if re <= 0:
            raise ValueError(f"Reynolds number must be > 0, got {re}")
        super().__init__(noise_model=GaussianNoise(sigma=float(noise_sigma)))
        self.solver = NSSolver(size, nu=1.0 / re, forcing=forcing, dt=dt, cfl_max=cfl_max)
        self.size, self.t_final, self.subsample, self.differentiable = size, t_final, subsample, differentiable

    def final_state(self, x: Tensor) -> Tensor:
        """Full vorticity at t_final, (B, 1, N, N)."""
        n = self.size
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, n, n):
            raise ValueError(f"NavierStokes expects x of shape (B, 1, {n}, {n}), got {tuple(x.shape)}")
        if self.differentiable:
            return self.solver.evolve(x[:, 0], self.t_final)[:, None]
        with torch.no_grad():
            w = self.solver.evolve(x[:, 0].detach(), self.t_final)[:, None]
        return _BlackBox.apply(w, x) if x.requires_grad else w

    def A(self, x: Tensor, **kw) -> Tensor:
        s = self.subsample
        return self.final_state(x)[..., ::s, ::s]


@register("navier_stokes", "2-D Navier-Stokes (InverseBench): w0 (B,1,N,N) -> w(T=1) subsampled; size, subsample")
def _build_ns(size: int = 128, subsample: int = 2, noise_sigma: float = 0.0, **kw) -> NavierStokes:
    return NavierStokes(size=size, subsample=subsample, noise_sigma=noise_sigma, **kw)
