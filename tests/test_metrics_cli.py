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


def test_console_script_installed():
    script = Path(sys.executable).parent / "invsolve"
    out = subprocess.run([str(script), "list"], check=False, capture_output=True, text=True)
    assert out.returncode == 0 and "ddim" in out.stdout
