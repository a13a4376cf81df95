"""Data generators: seeded and reproducible, batch-independent, cached with their parameters."""

import torch

from invsolve.cli import main as cli_main
from invsolve.data import darcy_dataset, generate_darcy, grf_neumann, grf_periodic, ns_dataset
from invsolve.data.cache import read_cache
from invsolve.operators.pde import Darcy


def test_grf_seeded_and_prefix_stable():
    a = grf_neumann(5, 16, seed=3)
    assert torch.equal(a, grf_neumann(5, 16, seed=3))
    assert torch.equal(a[2:4], grf_neumann(2, 16, seed=3, start=2))  # independent of batching
    assert not torch.allclose(a, grf_neumann(5, 16, seed=4))
    assert abs(float(a.mean())) < 0.1  # constant mode removed
    p = grf_periodic(3, 16, seed=1)
    assert torch.equal(p, grf_periodic(3, 16, seed=1))
    assert torch.allclose(p.mean((-2, -1)), torch.zeros(3, dtype=p.dtype), atol=1e-12)


def test_darcy_pairs_are_operator_pairs():
    d = generate_darcy(6, 16, seed=0, chunk=4, progress=False)
    assert d["a"].shape == d["u"].shape == (6, 1, 16, 16)
    assert set(torch.unique(d["a"]).tolist()) <= {3.0, 12.0}
    u = Darcy(size=16).A(d["a"].double())
    assert torch.allclose(u.float(), d["u"], rtol=1e-5, atol=1e-9)
    assert torch.equal(d["a"], generate_darcy(6, 16, seed=0, chunk=6, progress=False)["a"])


def test_cache_reused_and_regenerated_on_change(tmp_path):
    path = tmp_path / "darcy.pt"
    d1 = darcy_dataset(4, 12, seed=0, path=path, progress=False)
    mtime = path.stat().st_mtime_ns
    d2 = darcy_dataset(4, 12, seed=0, path=path, progress=False)
    assert path.stat().st_mtime_ns == mtime and torch.equal(d1["a"], d2["a"])  # from the cache
    d3 = darcy_dataset(4, 12, seed=1, path=path, progress=False)
    assert read_cache(path)[0]["seed"] == 1 and not torch.equal(d1["a"], d3["a"])
    d4 = darcy_dataset(4, 12, seed=1, path=path, tau=4.0, progress=False)
    assert read_cache(path)[0]["tau"] == 4.0 and not torch.equal(d3["a"], d4["a"])


def test_ns_dataset_npz_cache(tmp_path):
    path = tmp_path / "ns.npz"
    kw = {"t_final": 0.04, "snapshots": 2, "dt": 0.01, "burn_in": 0.02}
    d1 = ns_dataset(2, 16, seed=0, path=path, progress=False, **kw)
    assert d1["w"].shape == (2, 3, 16, 16) and torch.isfinite(d1["w"]).all()
    stored, d2 = read_cache(path)
    assert stored["snapshots"] == 2 and torch.equal(d1["w"], d2["w"])
    d3 = ns_dataset(2, 16, seed=0, path=path, progress=False, **{**kw, "snapshots": 4})
    assert d3["w"].shape == (2, 5, 16, 16)


def test_cli(tmp_path, capsys):
    out = tmp_path / "d.pt"
    assert cli_main(["data", "darcy", "--n", "3", "--size", "10", "--out", str(out), "--no-progress"]) == 0
    assert read_cache(out)[1]["u"].shape == (3, 1, 10, 10)
    assert cli_main(["data", "ns", "--n", "1", "--size", "16", "--out", str(tmp_path / "n.npz"),
                     "--snapshots", "1", "--t-final", "0.02", "--dt", "0.01", "--burn-in", "0",
                     "--no-progress"]) == 0
    assert cli_main(["data", "darcy", "--n", "3", "--out", str(tmp_path / "x.txt")]) == 2
