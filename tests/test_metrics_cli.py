import subprocess
import sys
from pathlib import Path

import torch

from invsolve.cli import main
from invsolve.evaluation import sliced_wasserstein


def test_sliced_wasserstein_values():
    x = torch.randn(3000, 4, dtype=torch.float64)
    assert sliced_wasserstein(x, x) == 0.0
    shift = torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    # for a pure shift m, SW2^2 = E_theta (theta . m)^2 = |m|^2 / d
    sw = sliced_wasserstein(x, x + shift, n_directions=2000)
    assert abs(sw - 1.0) < 0.05
    y = torch.randn(1000, 4, dtype=torch.float64)
    assert sliced_wasserstein(x, y) < 0.15  # same law, different sizes


def test_cli_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "solvers:" in out and "dps" in out and "matrix" in out and "gmm" in out


def test_cli_demo(tmp_path, capsys):
    assert main(["demo", "--steps", "30", "--samples", "128", "--no-image", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "floor" in out and "dps" in out
    assert (tmp_path / "demo.png").stat().st_size > 1000


def test_demo_task_row_and_panels(capsys, tmp_path):
    """One image-demo task, small: the baseline and PnP-Flow both scored against the truth, the row
    printed, the figure panels named with their PSNR; FBP stands in for a sinogram."""
    from invsolve import operators, priors
    from invsolve.demo import _demo_task, _plot_rows
    from invsolve.evaluation.metrics import psnr
    from invsolve.priors.datasets import shepp_logan

    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    op = operators.build("inpaint_random", img_size=(3, 16, 16), missing=0.5, noise_sigma=0.02)
    panels = _demo_task(op, x, priors.load("natural-rgb"), "biharmonic", {}, 3, 0, "random", psnr)
    row = capsys.readouterr().out
    assert list(panels)[:2] == ["truth", "measurement"] and torch.equal(panels["truth"], x)
    assert "biharmonic" in row and "random" in row
    base = next(k for k in panels if k.startswith("biharmonic: "))
    assert f"{psnr(panels[base].clamp(0, 1), x):.2f} dB" in base
    ct_x = shepp_logan(16)[None]
    ct = operators.build("ct_sparse", img_size=(1, 16, 16), angles=10, noise_sigma=0.01)
    ct_panels = _demo_task(ct, ct_x, priors.load("phantom-ct"), "tv", {"weight": 1e-3}, 2, 0, "ct", psnr,
                           picture="fbp")
    assert "FBP (Hann)" in ct_panels and "FBP" in capsys.readouterr().out
    path = tmp_path / "rows.png"
    _plot_rows([("random", panels), ("ct", ct_panels)], path)
    assert path.stat().st_size > 1000


def test_console_script_installed():
    script = Path(sys.executable).parent / "invsolve"
    out = subprocess.run([str(script), "list"], check=False, capture_output=True, text=True)
    assert out.returncode == 0 and "ddim" in out.stdout
