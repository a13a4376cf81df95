"""Classical baselines (invsolve.evaluation.baselines): exact on the cases where the method is exact,
right on a dense reference solve, refusing operators they do not apply to, and rows in the runner."""

from __future__ import annotations

import math

import pytest
import torch

import invsolve
from invsolve import operators, priors
from invsolve.evaluation import baselines as B
from invsolve.evaluation.metrics import psnr_per_sample
from invsolve.evaluation.rows import read_rows


@pytest.fixture(scope="module")
def prior():
    return priors.load("natural-rgb").to(dtype=torch.float64)


def smooth_images(n: int, size: int) -> torch.Tensor:
    """Band-limited images in [0.2, 0.8]: a few low-frequency sinusoids per channel."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64),
                            torch.arange(size, dtype=torch.float64), indexing="ij")
    out = torch.zeros(n, 3, size, size, dtype=torch.float64)
    for k in range(3):
        a, b, p = torch.randint(0, 3, (2,), generator=g).tolist() + [float(torch.rand(1, generator=g))]
        out[:, k] += torch.cos(2 * math.pi * (a * yy + b * xx) / size + 6 * p) / 3
    return 0.5 + 0.3 * out / out.abs().max()


def dense(op, x_shape: tuple) -> torch.Tensor:
    """The matrix of a linear operator (columns A e_i), for tiny shapes."""
    n = math.prod(x_shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *x_shape)
    return op.A(eye).reshape(n, -1).T


def test_registered_with_zero_nfe():
    from invsolve import solvers

    for name in B.BASELINES:
        cls = solvers.get(name)
        assert cls().expected_nfe() == 0 and name in solvers.available()


@pytest.mark.parametrize("name, offset", [("sr4", 0.5), ("sr4_pool", 1.5), ("sr2", 0.5)])
def test_bicubic_on_the_operator_grid(name, offset, prior):
    x = smooth_images(2, 32)
    op = operators.build(name, img_size=(3, 32, 32)).to(torch.float64)
    assert B.sampling_offset(op, (3, 32, 32), op.factor, x) == pytest.approx((offset, offset), abs=1e-9)
    res = invsolve.solve(invsolve.Problem.simulate(op, x, seed=0), prior, "bicubic")
    assert res.nfe == 0 and res.x.shape == x.shape
    # a smooth image comes back closely; the wrong grid (offset 0) is clearly worse
    ok = psnr_per_sample(res.x, x, (0, 1)).min()
    shifted = B.bicubic_upsample(op.A(x), op.factor, (32, 32)).clamp(0, 1)
    assert ok > 33 and ok > psnr_per_sample(shifted, x, (0, 1)).max() + 1


def test_biharmonic_is_exact_on_a_linear_ramp(prior):
    ramp = torch.linspace(0.1, 0.9, 24, dtype=torch.float64)
    x = (ramp[None, :] * 0.5 + ramp[:, None] * 0.5).expand(1, 3, 24, 24).clone()
    from invsolve.operators.imaging import Inpainting

    mask = torch.ones(24, 24)
    mask[4:20, 4:20] = (torch.rand(16, 16, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    op = Inpainting((3, 24, 24), mask)  # holes inside a known border: a linear image is biharmonic
    res = invsolve.solve(invsolve.Problem.simulate(op, x, seed=0), prior, "biharmonic")
    assert torch.allclose(res.x, x, atol=1e-6)


@pytest.mark.parametrize("name, kw", [("blur_gauss", {"kernel_size": 5, "std": 1.0}),
                                      ("inpaint_random", {"missing": 0.5}),
                                      ("sr2", {})])
def test_tikhonov_matches_the_dense_solve(name, kw, prior):
    shape = (3, 6, 6)
    x = torch.rand(2, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    op = operators.build(name, img_size=shape, noise_sigma=0.05, **kw).to(torch.float64)
    problem = invsolve.Problem.simulate(op, x, seed=[1, 2])
    weight = 0.05
    res = invsolve.solve(problem, prior, "tikhonov", weight=weight, steps=500)
    a = dense(op, shape)
    lip = float(torch.linalg.eigvalsh(a.T @ a).max())
    c = torch.full((a.shape[1],), 0.5, dtype=torch.float64)
    rhs = a.T @ (problem.y.reshape(2, -1).T - (a @ c)[:, None])
    ref = c[:, None] + torch.linalg.solve(a.T @ a + weight * lip * torch.eye(a.shape[1],
                                          dtype=torch.float64), rhs)
    assert torch.allclose(res.x.reshape(2, -1), ref.T.clamp(0, 1), atol=1e-5)


def test_tv_denoises_and_is_batch_invariant(prior):
    x = torch.zeros(2, 3, 24, 24, dtype=torch.float64)
    x[:, :, 6:18, 6:18] = 0.8
    x[1, :, :, :12] += 0.1
    op = operators.build("denoise", img_size=(3, 24, 24), noise_sigma=0.1).to(torch.float64)
    problem = invsolve.Problem.simulate(op, x, seed=[3, 4])
    res = invsolve.solve(problem, prior, "tv", weight=0.05, steps=60)
    assert (psnr_per_sample(res.x, x, (0, 1)) > psnr_per_sample(problem.y.clamp(0, 1), x, (0, 1)) + 5).all()
    one = invsolve.solve(invsolve.Problem(op, problem.y[1:]), prior, "tv", weight=0.05, steps=60, seed=0)
    assert torch.allclose(one.x[0], res.x[1], atol=1e-10)
    # weight 0: the projected gradient least-squares fit, here y clipped to the data range
    plain = invsolve.solve(problem, prior, "tv", weight=0.0, steps=5)
    assert torch.allclose(plain.x, problem.y.clamp(0, 1), atol=1e-10)


def test_fbp_and_zero_filled(prior):
    from invsolve.priors.datasets import shepp_logan

    x = shepp_logan(64)[None].double()
    op = operators.build("ct_sparse", img_size=(1, 64, 64), angles=180, dtype=torch.float64)
    ct_prior = priors.load("phantom-ct").to(dtype=torch.float64)
    res = invsolve.solve(invsolve.Problem.simulate(op, x, seed=0), ct_prior, "fbp", filter="ramp")
    assert psnr_per_sample(res.x, x, (0, 1)).item() > 25  # dense noiseless data: close to exact
    mri = operators.build("mri", img_size=(1, 32, 32), acceleration=4).to(torch.float64)
    xm = smooth_images(1, 32)[:, :1]
    problem = invsolve.Problem.simulate(mri, xm, seed=0)
    zf = invsolve.solve(problem, ct_prior, "zero_filled")
    assert torch.allclose(zf.x, mri.A_adjoint(problem.y).clamp(0, 1))


@pytest.mark.parametrize("solver, op, kw, match", [
    ("bicubic", "inpaint_box", {}, "super-resolution"),
    ("biharmonic", "sr4", {}, "inpainting"),
    ("tv", "phase_retrieval", {}, "linear operator"),
    ("tikhonov", "hdr", {}, "linear operator"),
    ("fbp", "blur_gauss", {"kernel_size": 5}, "CT"),
    ("zero_filled", "sr4", {}, "MRI"),
])
def test_refuses_other_operators(solver, op, kw, match, prior):
    x = smooth_images(1, 16)
    problem = invsolve.Problem.simulate(operators.build(op, img_size=(3, 16, 16), **kw), x.float(), seed=0)
    with pytest.raises(ValueError, match=match):
        invsolve.solve(problem, priors.load("natural-rgb"), solver)


def test_rows_in_the_runner(tmp_path):
    path = tmp_path / "x.pt"
    torch.save(smooth_images(2, 16).float(), path)
    cfg = {"grids": [{"data": {"name": "tensor", "path": str(path)},
                      "operators": [{"name": "sr4", "noise_sigma": 0.01}],
                      "priors": ["natural-rgb"],
                      "solvers": ["bicubic", {"name": "tikhonov", "hp": {"weight": 0.01}},
                                  {"name": "tv", "steps": 20}, "biharmonic"]}]}
    out = invsolve.evaluate(cfg, tmp_path / "o", progress=False)
    rows = read_rows(out / "results.jsonl")
    by = {r["key"]["solver"]["name"]: r for r in rows}
    assert all(by[n]["error"] is None and by[n]["nfe"] == 0 for n in ("bicubic", "tikhonov", "tv"))
    assert "inpainting" in by["biharmonic"]["error"]
