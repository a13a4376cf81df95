"""Imaging operators: adjoints, shapes, seeded masks, bad input, noise models with Problem.misfit."""

import pytest
import torch

import invsolve
from invsolve import operators
from invsolve.operators import imaging

IMG = (3, 32, 32)
LINEAR = [
    ("blur_gauss", {"kernel_size": 9, "padding": "circular"}),
    ("blur_gauss", {"kernel_size": 9, "padding": "valid"}),
    ("blur_motion", {"kernel_size": 9, "padding": "circular"}),
    ("blur_motion", {"kernel_size": 9, "padding": "valid"}),
    ("blur_uniform", {"padding": "circular"}),
    ("blur_uniform", {"padding": "valid"}),
    ("inpaint_box", {}), ("inpaint_random", {}), ("inpaint_half", {}), ("inpaint_freeform", {}),
    ("sr2", {}), ("sr4", {}), ("sr8", {}), ("sr2_pool", {}), ("sr4_pool", {}), ("sr8_pool", {}),
    ("denoise", {}), ("colorize", {}),
]


def adjoint_error(op, x_shape):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, *x_shape, generator=g, dtype=torch.float64)
    ax = op.A(x)
    y = torch.randn(ax.shape, generator=g, dtype=torch.float64)
    lhs, rhs = (ax * y).sum(), (x * op.A_adjoint(y)).sum()
    return float((lhs - rhs).abs() / lhs.abs())


@pytest.mark.parametrize("name,kw", LINEAR)
def test_adjoint(name, kw):
    op = operators.build(name, img_size=IMG, **kw)
    assert adjoint_error(op, IMG) < 1e-5


def test_shapes_and_values():
    x = torch.rand(2, *IMG)
    assert operators.build("sr4", img_size=IMG).A(x).shape == (2, 3, 8, 8)
    assert operators.build("blur_uniform", img_size=IMG, padding="valid").A(x).shape == (2, 3, 24, 24)
    assert operators.build("colorize", img_size=IMG).A(x).shape == (2, 1, 32, 32)
    torch.testing.assert_close(operators.build("colorize", img_size=IMG).A(x), x.mean(1, keepdim=True))
    pool = operators.build("sr4_pool", img_size=IMG).A(x)
    torch.testing.assert_close(pool, torch.nn.functional.avg_pool2d(x, 4))
    # the DPS/DAPS kernel: 61x61, std 3, sums to one; blurring a constant image keeps it
    k = imaging.gaussian_kernel()
    assert k.shape == (1, 1, 61, 61) and abs(float(k.sum()) - 1) < 1e-6
    c = torch.full((1, 3, 64, 64), 0.3)
    torch.testing.assert_close(operators.build("blur_gauss", img_size=(3, 64, 64)).A(c), c)


def test_masks_seeded_and_shaped():
    a, b = imaging.random_mask(IMG, 0.7, seed=3), imaging.random_mask(IMG, 0.7, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, imaging.random_mask(IMG, 0.7, seed=4))
    assert abs(float(1 - a.mean()) - 0.7) < 0.1
    f1, f2 = imaging.freeform_mask(IMG, seed=5), imaging.freeform_mask(IMG, seed=5)
    assert torch.equal(f1, f2) and 0 < float(f1.mean()) < 1
    assert torch.equal(imaging.motion_kernel(15, seed=2), imaging.motion_kernel(15, seed=2))
    box = imaging.box_mask((3, 256, 256))
    assert int((box == 0).sum()) == 128 * 128 and box[128, 128] == 0 and box[0, 0] == 1
    assert float(imaging.half_mask(IMG).mean()) == 0.5
    m = operators.build("inpaint_random", img_size=IMG, seed=7).mask
    assert torch.equal(m, operators.build("inpaint_random", img_size=IMG, seed=7).mask)


@pytest.mark.parametrize("call", [
    lambda: operators.build("sr4", img_size=(3, 30, 30)),               # factor does not divide
    lambda: operators.build("sr4", img_size=(3, 32)),                   # not (C, H, W)
    lambda: operators.build("sr4", img_size=IMG, noise_sigma=-0.1),     # negative noise
    lambda: operators.build("denoise", img_size=IMG, poisson_gain=0.0),
    lambda: operators.build("denoise", img_size=IMG, noise_sigma=0.1, poisson_gain=1.0),
    lambda: operators.build("colorize", img_size=(1, 32, 32)),          # nothing to colourise
    lambda: operators.build("blur_gauss", img_size=IMG, padding="reflect"),
    lambda: operators.build("blur_gauss", img_size=IMG),                # 61x61 kernel > 32x32 image
    lambda: operators.build("inpaint_random", img_size=IMG, missing=1.5),
    lambda: operators.build("no_such_operator"),
    lambda: imaging.Inpainting(IMG, torch.ones(16, 16)),                # mask of the wrong shape
    lambda: imaging.Inpainting(IMG, torch.full((32, 32), 0.5)),         # non-binary mask
    lambda: operators.build("sr4", img_size=IMG).A(torch.rand(2, 1, 32, 32)),   # wrong channels
    lambda: operators.build("sr4", img_size=IMG).A(torch.rand(2, 3, 64, 64)),   # wrong size
    lambda: operators.build("sr4", img_size=IMG).A_adjoint(torch.rand(2, 3, 16, 16)),
    lambda: operators.build("inpaint_box", img_size=IMG).A(torch.rand(3, 32, 32)),  # no batch
])
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()


def test_noise_models_and_misfit():
    x = torch.rand(4, *IMG, dtype=torch.float64)
    op = operators.build("sr2", img_size=IMG, noise_sigma=0.1)
    assert isinstance(op.noise_model, type(imaging.make_noise(0.1)))
    prob = invsolve.Problem.simulate(op, x, seed=0)
    r = prob.misfit(x)
    assert r.shape == (4,)
    # at the truth the Gaussian misfit is chi^2 / 2 with m = 3*16*16 degrees of freedom
    assert abs(float(r.mean()) / (3 * 16 * 16 / 2) - 1) < 0.1
    # per-sample: sample 2 alone gives the same value
    torch.testing.assert_close(prob[2].misfit(x[2:3]), r[2:3])
    pois = operators.build("denoise", img_size=IMG, poisson_gain=0.05)
    pp = invsolve.Problem.simulate(pois, x, seed=0)
    assert pp.noise.kind == "poisson" and pp.misfit(x).shape == (4,)
    assert pp.misfit(x).mean() < pp.misfit((x + 0.3).clamp(0, 1)).mean()
    assert invsolve.Problem.simulate(operators.build("denoise", img_size=IMG), x).noise.sigma == 0


def test_float32_and_float64_agree():
    op = operators.build("blur_motion", img_size=IMG, kernel_size=9)
    x = torch.rand(2, *IMG)
    y32 = op.A(x)
    y64 = op.A(x.double())
    assert y64.dtype == torch.float64 and op.A(x).dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, atol=1e-5, rtol=1e-5)


def test_to_float64_keeps_complex_filters():
    """op.to(torch.float64) must not drop the complex phase of a circular blur's Fourier filter."""
    op = operators.build("blur_motion", img_size=(3, 16, 16), kernel_size=5)
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    ref = op.A(x)
    op64 = operators.build("blur_motion", img_size=(3, 16, 16), kernel_size=5).to(torch.float64)
    assert all(not b.is_floating_point() or b.dtype == torch.float64 for b in op64.buffers())
    torch.testing.assert_close(op64.A(x), ref, atol=1e-6, rtol=0)
