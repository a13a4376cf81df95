import pytest
import torch
from deepinv.physics import Denoising, GaussianNoise, PoissonNoise, UniformNoise

import invsolve
from invsolve import operators


def _op(sigma=0.5):
    g = torch.Generator().manual_seed(0)
    return operators.Matrix(torch.randn(3, 5, generator=g, dtype=torch.float64), noise_sigma=sigma)


def test_simulate_is_seeded_per_sample():
    x = torch.randn(4, 5, dtype=torch.float64)
    a = invsolve.Problem.simulate(_op(), x, seed=[10, 11, 12, 13])
    b = invsolve.Problem.simulate(_op(), x[2:3], seed=[12])
    torch.testing.assert_close(a.y[2:3], b.y)
    c = invsolve.Problem.simulate(_op(), x, seed=10)  # one int: sample i gets seed + i
    torch.testing.assert_close(a.y, c.y)
    assert not torch.allclose(a.y[0], a.y[1] - (_op().A(x)[1] - _op().A(x)[0]))


def test_misfit_is_per_sample_gaussian_nll():
    op = _op(0.5)
    x = torch.randn(4, 5, dtype=torch.float64)
    problem = invsolve.Problem.simulate(op, x, seed=0)
    z = torch.randn(4, 5, dtype=torch.float64)
    expected = ((problem.y - op.A(z)) ** 2).sum(1) / (2 * 0.25)
    torch.testing.assert_close(problem.misfit(z), expected)
    torch.testing.assert_close(problem[1].misfit(z[1:2]), expected[1:2])  # batch of 1 == row of batch


def test_poisson_misfit_and_simulation():
    op = Denoising(noise_model=PoissonNoise(gain=0.1))
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64) + 0.1
    problem = invsolve.Problem.simulate(op, x, seed=0)
    assert torch.allclose(problem.y / 0.1, (problem.y / 0.1).round())  # counts times gain
    lam = x / 0.1
    n = problem.y / 0.1
    expected = (lam - n * torch.log(lam)).flatten(1).sum(1)
    torch.testing.assert_close(problem.misfit(x), expected)
    # the NLL is minimised (over scalings of x) near the truth
    m = torch.stack([problem.misfit(s * x) for s in (0.5, 1.0, 2.0)])
    assert (m[1] < m[0]).all() and (m[1] < m[2]).all()


def test_repeat_and_indexing():
    problem = invsolve.Problem.simulate(_op(), torch.randn(2, 5, dtype=torch.float64), seed=0)
    rep = problem.repeat(3)
    assert len(rep) == 6 and rep.x_shape == (5,)
    torch.testing.assert_close(rep.y[3], problem.y[1])
    with pytest.raises(IndexError):
        problem[5]


def test_clear_errors():
    op = _op()
    with pytest.raises(ValueError, match="shape"):
        invsolve.Problem(op, torch.zeros(1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        invsolve.Problem(op, torch.tensor([[0.0, float("nan"), 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="batch size"):
        invsolve.Problem(op, torch.zeros(2, 3, dtype=torch.float64), x_true=torch.zeros(3, 5))
    bad = Denoising(noise_model=UniformNoise(a=0.1))
    with pytest.raises(ValueError, match="unknown noise model UniformNoise"):
        invsolve.Problem(bad, torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="noise_sigma"):
        operators.Matrix(torch.ones(2, 2), noise_sigma=-1.0)
    problem = invsolve.Problem.simulate(op, torch.zeros(2, 5, dtype=torch.float64), seed=0)
    with pytest.raises(ValueError, match="repeat"):
        problem.misfit(torch.zeros(3, 5, dtype=torch.float64))


def test_noiseless_problem_uses_unit_variance_misfit():
    op = operators.Matrix(torch.eye(2, dtype=torch.float64), noise_sigma=0.0)
    problem = invsolve.Problem(op, torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    assert problem.noise_sigma == 0.0
    torch.testing.assert_close(problem.misfit(torch.zeros(1, 2, dtype=torch.float64)),
                               torch.tensor([2.5], dtype=torch.float64))


def test_matrix_operator_adjoint_and_svd():
    g = torch.Generator().manual_seed(1)
    for m, d in [(2, 6), (6, 6), (7, 4)]:
        a = torch.randn(m, d, generator=g, dtype=torch.float64)
        op = operators.Matrix(a)
        x, y = torch.randn(3, d, dtype=torch.float64), torch.randn(3, m, dtype=torch.float64)
        torch.testing.assert_close(op.A(x), x @ a.T)
        torch.testing.assert_close(op.A_adjoint(y), y @ a)
        assert abs((op.A(x) * y).sum() - (x * op.A_adjoint(y)).sum()) < 1e-10
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        op.A(torch.zeros(2, 5, dtype=torch.float64))


def test_gaussian_noise_model_is_read():
    op = Denoising(noise_model=GaussianNoise(sigma=0.2))
    problem = invsolve.Problem(op, torch.zeros(1, 1, 2, 2))
    assert problem.noise_sigma == pytest.approx(0.2)


def test_simulated_noise_respects_the_operator_mask():
    """deepinv inpainting keeps noise off missing pixels; simulate must too."""
    from deepinv.physics import Inpainting

    mask = torch.ones(1, 1, 4, 4)
    mask[..., :2, :] = 0
    op = Inpainting(img_size=(1, 4, 4), mask=mask, noise_model=GaussianNoise(sigma=0.3))
    problem = invsolve.Problem.simulate(op, torch.rand(2, 1, 4, 4), seed=0)
    assert (problem.y[..., :2, :] == 0).all()
    assert problem.y[..., 2:, :].std() > 0
    assert isinstance(op.noise_model, GaussianNoise)  # restored
