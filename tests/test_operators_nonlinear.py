"""Nonlinear operators (Fourier phase retrieval, HDR): invariances, finite-difference gradients."""

import pytest
import torch

import invsolve
from invsolve import operators
from invsolve.operators.hdr import HighDynamicRange
from invsolve.operators.phase_retrieval import FourierPhaseRetrieval

IMG = (2, 16, 16)


def test_phase_retrieval_shape_and_padding():
    op = operators.build("phase_retrieval", img_size=(3, 32, 32))
    assert op.pad == 8                                   # DPS/DAPS: oversample 2 -> H/4 per side
    assert op.A(torch.rand(2, 3, 32, 32)).shape == (2, 3, 48, 48)
    x = torch.rand(1, *IMG, dtype=torch.float64)        # Parseval: ||A x|| = ||x|| (orthonormal FFT)
    torch.testing.assert_close(operators.build("phase_retrieval", img_size=IMG).A(x).norm(), x.norm())


def test_phase_retrieval_invariances():
    op = operators.build("phase_retrieval", img_size=IMG)
    x = torch.zeros(2, *IMG, dtype=torch.float64)
    x[:, :, 4:12, 3:11] = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    y = op.A(x)
    torch.testing.assert_close(op.A(-x), y)                                     # global sign
    for shift in [(2, 3), (-4, 5), (-3, -3)]:                                   # translation
        torch.testing.assert_close(op.A(torch.roll(x, shift, dims=(-2, -1))), y)
    # the object may even leave the image, as long as it stays inside the padded canvas:
    # a shift of the canvas is a phase ramp in Fourier space
    big = FourierPhaseRetrieval(IMG, pad=8)
    canvas = torch.nn.functional.pad(x, (8, 8, 8, 8))
    moved = torch.roll(canvas, (10, -9), dims=(-2, -1))
    torch.testing.assert_close(torch.fft.fft2(moved, norm="ortho").abs(), big.A(x))
    assert not torch.allclose(op.A(x.flip(-1) + 0.1), y)                      # it does see content


def test_phase_retrieval_gradient_fd():
    op = operators.build("phase_retrieval", img_size=(1, 8, 8))
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op.A, (x,), eps=1e-6, atol=1e-6)
    # and the gradient of the misfit a solver uses (DPS), against a central difference
    prob = invsolve.Problem.simulate(operators.build("phase_retrieval", img_size=(1, 8, 8),
                                                     noise_sigma=0.05), x.detach(), seed=0)
    x0 = torch.rand(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(prob.misfit(x0).sum(), x0)
    d = torch.randn_like(x0)
    h = 1e-6
    fd = (prob.misfit(x0 + h * d) - prob.misfit(x0 - h * d)) / (2 * h)
    torch.testing.assert_close(fd, (g * d).flatten(1).sum(1), rtol=1e-5, atol=1e-5)


def test_hdr_values_and_gradient_fd():
    op = operators.build("hdr", img_size=IMG)
    x = torch.tensor([0.0, 0.2, 0.25, 0.5, 0.6, 0.75, 1.0]).reshape(1, 1, 1, 7)
    small = HighDynamicRange((1, 1, 7))
    torch.testing.assert_close(small.A(x), torch.tensor([0, 0, 0, 0.5, 0.7, 1, 1]).reshape(1, 1, 1, 7))
    # same as clip(alpha x_pm, -1, 1) in DAPS's [-1, 1] units
    x = torch.rand(3, *IMG, dtype=torch.float64)
    torch.testing.assert_close(op.A(x), ((2 * (2 * x - 1)).clamp(-1, 1) + 1) / 2)
    # finite differences away from the kinks at x = 0.25 and 0.75 (alpha = 2)
    x = torch.rand(2, *IMG, dtype=torch.float64)
    x = torch.where((x - 0.25).abs() < 1e-3, x + 0.01, x)
    x = torch.where((x - 0.75).abs() < 1e-3, x + 0.01, x).requires_grad_(True)
    assert torch.autograd.gradcheck(op.A, (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("call", [
    lambda: operators.build("phase_retrieval", img_size=(16, 16)),
    lambda: operators.build("phase_retrieval", img_size=IMG, noise_sigma=-0.05),
    lambda: operators.build("phase_retrieval", img_size=IMG).A(torch.rand(1, 3, 16, 16)),
    lambda: FourierPhaseRetrieval(IMG, pad=-1),
    lambda: operators.build("hdr", img_size=IMG, alpha=0.0),
    lambda: operators.build("hdr", img_size=IMG).A(torch.rand(1, 2, 8, 8)),
])
def test_bad_input(call):
    with pytest.raises(ValueError):
        call()
