"""The divergence guard: exact step on CPU; on a GPU deferred to a device-side flag read every
``guard_every`` calls, so a solver loop makes no host synchronisation per step."""

import warnings
from dataclasses import dataclass

import pytest
import torch

import invsolve
from invsolve.evaluation.gmm import make_case
from invsolve.solvers.base import Solver


@dataclass
class _BadAt(Solver):
    """Goes non-finite (or diverges) at step ``bad`` + 1 and stays so."""

    name = "bad_at"
    bad: int = 3
    blow: str = "nan"

    def run(self, problem, prior, gens):
        x = torch.zeros(len(problem), *problem.x_shape, dtype=torch.float64)
        for i in self.iterate():
            if i >= self.bad:
                x = x + (float("nan") if self.blow == "nan" else 1e12)
            self.guard(x, i, "steps")
        return x, {}


@pytest.fixture
def problem():
    return make_case(8, 2, 0).problem


PRIOR = make_case(8, 2, 0).prior


@pytest.mark.parametrize("blow, what", [("nan", "non-finite"), ("big", "diverged")])
def test_cpu_guard_names_the_first_bad_step(problem, blow, what):
    with pytest.raises(FloatingPointError, match=rf"{what}.* at step 4/20; lower steps"):
        _BadAt(steps=20, bad=3, blow=blow).solve(problem, PRIOR)


def test_deferred_guard_reads_back_every_k_calls_and_still_names_the_step(problem, monkeypatch):
    monkeypatch.setattr(Solver, "_deferred", staticmethod(lambda x: True))  # as on CUDA
    reads = []
    flush = Solver.flush_guard
    monkeypatch.setattr(Solver, "flush_guard", lambda self: (reads.append(1), flush(self))[1])
    _BadAt(steps=25, bad=30).solve(problem, PRIOR)  # never bad: 2 periodic reads + 1 at the end
    assert len(reads) == 3
    reads.clear()
    with pytest.raises(FloatingPointError, match="at step 4/25"):
        _BadAt(steps=25, bad=3).solve(problem, PRIOR)
    assert len(reads) == 1  # raised at the first periodic read (call 10), not at step 4
    reads.clear()
    with pytest.raises(FloatingPointError, match="at step 23/25"):  # after the last periodic read
        _BadAt(steps=25, bad=22).solve(problem, PRIOR)


def test_deferred_guard_does_not_change_results(problem, monkeypatch):
    a = invsolve.solve(problem.repeat(3), PRIOR, "dps", steps=12, seed=0).x
    monkeypatch.setattr(Solver, "_deferred", staticmethod(lambda x: True))
    b = invsolve.solve(problem.repeat(3), PRIOR, "dps", steps=12, seed=0).x
    assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_in_the_guard_on_cuda(problem):
    x = torch.zeros(4, 8, device="cuda")
    solver = _BadAt(steps=5)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(5):
            solver.guard(x, i, "steps")
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_network_prior_makes_no_host_reads_when_deferred(monkeypatch):
    """As on a GPU (host_reads_free False): denoise and x0_at read no tensor value back (no bool / int /
    float / item on a tensor), count their clamped queries on the device, and give the same values."""
    from invsolve import priors
    from invsolve.priors import network

    prior = priors.load("natural-rgb").eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16, generator=g)
    sigma = torch.tensor([0.0, 0.3, 1e-6])  # one row at zero noise, one below the valid range
    t = torch.tensor([0.5, 2e-7, 30.0])
    with torch.no_grad():
        ref = prior.denoise(x, sigma), prior.x0_at(x, t, prior.native_path())
    count = prior.out_of_range
    monkeypatch.setattr(network, "host_reads_free", lambda t: False)
    reads = []
    for name in ("__bool__", "__int__", "__float__", "item"):
        orig = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=orig, _n=name: (reads.append(_n), _o(self, *a))[1])
    with torch.no_grad():
        out = prior.denoise(x, sigma), prior.x0_at(x, t, prior.native_path())
    assert reads == []
    monkeypatch.undo()
    assert torch.allclose(out[0], ref[0], atol=1e-6) and torch.equal(out[0][0], x[0])
    assert torch.allclose(out[1], ref[1], atol=1e-6)
    assert prior.out_of_range == 2 * count > 0


def test_solver_loops_read_no_device_value_per_step(monkeypatch):
    """As on a GPU (deferred guard, host_reads_free False), a solver reads no value of a working-precision
    tensor back to the host per step: the float32 reads (bool / int / float / item on a float32 tensor,
    where schedules are float64 and live on the CPU) are as many at 6 steps as at 3. Reads inside
    torch.optim (Adam's step counter, a CPU tensor) do not count. A per-step read is a host
    synchronisation per step on a GPU."""
    import traceback

    from invsolve import operators, priors, solvers
    from invsolve.priors import network

    prior = priors.load("natural-rgb").eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    problem = invsolve.Problem.simulate(operators.build("inpaint_random", img_size=(3, 16, 16), noise_sigma=0.02),
                                        x, seed=0)
    monkeypatch.setattr(Solver, "_deferred", staticmethod(lambda x: True))
    monkeypatch.setattr(network, "host_reads_free", lambda t: False)
    originals = {n: getattr(torch.Tensor, n) for n in ("__bool__", "__int__", "__float__", "item")}
    reads: list[str] = []

    def recording(name):
        def read(self, *args):
            if self.dtype == torch.float32:
                stack = traceback.extract_stack()[:-1]
                if not any("torch/optim" in f.filename for f in stack):
                    where = next(f for f in reversed(stack) if "invsolve" in f.filename or "priors" in f.filename)
                    reads.append(f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno}")
            return originals[name](self, *args)
        return read

    per_step = {}
    for name in solvers.available(baselines=False):
        counts = []
        for steps in (3, 6):
            hp = {"steps": steps}
            if name == "daps":
                hp.update(ode_steps=1, mcmc_steps=2)
            if name in ("tds", "mcgdiff"):
                hp.update(particles=2)
            reads.clear()
            for n in originals:
                monkeypatch.setattr(torch.Tensor, n, recording(n))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    invsolve.solve(problem, prior, name, seed=0, **hp)
            finally:
                for n, f in originals.items():
                    monkeypatch.setattr(torch.Tensor, n, f)
            counts.append(list(reads))
        if len(counts[1]) != len(counts[0]):
            per_step[name] = sorted(set(counts[1]) - set(counts[0]) or set(counts[1]))
    assert not per_step, per_step
