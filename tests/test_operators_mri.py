"""MRI: adjoints, zero-filled reconstruction against numpy FFT, masks, coil maps, bad input."""

import numpy as np
import pytest
import torch

from invsolve import operators
from invsolve.operators.mri import MRI, cartesian_mask, coil_sensitivities, to_complex_channels

H = W = 32


def _np_fft(z):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(z, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _np_ifft(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _cplx(t):
    a = t.numpy()
    return a[:, 0] + 1j * a[:, 1]


@pytest.mark.parametrize("name", ["mri", "mri_multicoil"])
@pytest.mark.parametrize("mask", ["random", "equispaced"])
@pytest.mark.parametrize("acc", [4, 8])
def test_adjoint(name, mask, acc):
    op = operators.build(name, img_size=(2, H, W), acceleration=acc, mask=mask)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, H, W, generator=g, dtype=torch.float64)
    ax = op.A(x)
    y = torch.randn(ax.shape, generator=g, dtype=torch.float64)
    lhs, rhs = (ax * y).sum(), (x * op.A_adjoint(y)).sum()
    assert float((lhs - rhs).abs() / lhs.abs()) < 1e-5


def test_zero_filled_matches_numpy():
    op = operators.build("mri", img_size=(2, H, W), acceleration=4)
    x = torch.randn(2, 2, H, W, dtype=torch.float64)
    m = cartesian_mask((H, W), 4)
    zf = _np_ifft(_np_fft(_cplx(x)) * m.numpy())
    np.testing.assert_allclose(_cplx(op.A_adjoint(op.A(x))), zf, atol=1e-12)


def test_multicoil_zero_filled_matches_numpy():
    op = operators.build("mri_multicoil", img_size=(2, H, W), n_coils=4)
    x = torch.randn(2, 2, H, W, dtype=torch.float64)
    s = coil_sensitivities(4, H, W).numpy().astype(np.complex128)
    m = cartesian_mask((H, W), 4).numpy()
    k = _np_fft(s[None] * _cplx(x)[:, None]) * m
    y = op.A(x)
    np.testing.assert_allclose(y[:, 0].numpy() + 1j * y[:, 1].numpy(), k, atol=1e-5)
    ref = (np.conj(s)[None] * _np_ifft(k)).sum(1)
    np.testing.assert_allclose(_cplx(op.A_adjoint(y)), ref, atol=1e-5)


def test_masks():
    for acc, kind in [(4, "random"), (8, "random"), (4, "equispaced"), (8, "equispaced")]:
        m = cartesian_mask((64, 64), acc, kind, seed=1)
        assert torch.equal(m, cartesian_mask((64, 64), acc, kind, seed=1))
        cols = m[0]
        assert (m == cols[None]).all()                      # whole k-space lines
        centre = int((0.08 if acc < 8 else 0.04) * 64)         # fastMRI centre fractions
        assert cols[32 - centre // 2:32 - centre // 2 + centre].all()
        assert abs(float(cols.mean()) - 1 / acc) < 0.05
    assert not torch.equal(cartesian_mask((64, 64), 4, seed=1), cartesian_mask((64, 64), 4, seed=2))
    s = coil_sensitivities(8, H, W)
    torch.testing.assert_close((s.abs() ** 2).sum(0), torch.ones(H, W), atol=1e-5, rtol=0)


@pytest.mark.parametrize("call", [
    lambda: MRI((1, H, W), torch.ones(H, W)),                        # needs real/imag channels
    lambda: MRI((2, H, W), torch.ones(H, W // 2)),                   # mask of the wrong shape
    lambda: MRI((2, H, W), torch.ones(H, W)).A(torch.rand(1, 1, H, W)),
    lambda: operators.build("mri", img_size=(2, H, W), mask="radial"),
    lambda: operators.build("mri", img_size=(2, H, W), noise_sigma=-1),
    lambda: operators.build("mri_multicoil", img_size=(2, H, W), n_coils=0),
    lambda: to_complex_channels(torch.rand(1, 3, H, W)),
])
def test_bad_input(call):
    with pytest.raises(ValueError):
        call()


def test_real_image_mri_adjoint_and_pinv():
    """mri on (1, H, W) real images: <A x, y> = <x, A^T y>, and A^+ y solves the least-squares problem."""
    op = operators.build("mri", img_size=(1, 16, 16), acceleration=4, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64)
    y = torch.randn(2, 2, 16, 16, generator=g, dtype=torch.float64)
    torch.testing.assert_close((op.A(x) * y).sum(), (x * op.A_adjoint(y)).sum())
    torch.testing.assert_close(op.A(x)[:, :1], operators.build("mri", img_size=(2, 16, 16), acceleration=4,
                                                               seed=0).A(to_complex_channels(x))[:, :1])
    x_ls = op.A_dagger(op.A(x))
    assert (op.A(x_ls) - op.A(x)).norm() < 1e-3 * op.A(x).norm()
