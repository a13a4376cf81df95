"""``invsolve reconstruct``: from a photo (simulated y, PSNR printed) and from a measured y (no truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import invsolve
from invsolve import operators
from invsolve.cli import main as cli


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A 32 x 32 crop of the held-out photo as a PNG file."""
    from invsolve.priors.datasets import natural_rgb_images

    images, _ = natural_rgb_images("test")
    crop = images[0][:, 96:128, 160:192]
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray((crop.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(path)
    return path


def test_reconstruct_image_prints_psnr(photo, tmp_path, capsys):
    out = tmp_path / "recon.png"
    rc = cli(["reconstruct", "--image", str(photo), "--operator", "inpaint_random", "--op-arg", "missing=0.5",
              "--noise", "0.05", "--prior", "natural-rgb", "--solver", "ddrm", "--steps", "3",
              "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "PSNR" in text and "SSIM" in text and "NFE 3" in text
    psnr = float(text.split("PSNR ")[1].split(" dB")[0])
    assert 15 < psnr < 60
    assert Image.open(out).size == (32, 32)
    assert (tmp_path / "recon_figure.png").stat().st_size > 3000


def test_reconstruct_samples_write_mean_and_std(photo, tmp_path, capsys):
    out = tmp_path / "r.png"
    rc = cli(["reconstruct", "--image", str(photo), "--operator", "sr4", "--noise", "0.02",
              "--prior", "natural-rgb", "--solver", "diffpir", "--steps", "2", "--samples", "3",
              "--hp", "lam=7.0", "--out", str(out)])
    assert rc == 0
    assert "samples 3" in capsys.readouterr().out
    assert out.is_file() and (tmp_path / "r_std.png").is_file() and (tmp_path / "r_figure.png").is_file()


def test_reconstruct_measured_data_without_truth(tmp_path, capsys):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    op = operators.build("inpaint_random", img_size=(3, 32, 32), missing=0.5, noise_sigma=0.05)
    y = invsolve.Problem.simulate(op, x, seed=0).y[0]  # measured data arrive without a batch axis
    torch.save(y, tmp_path / "y.pt")
    (tmp_path / "op.yaml").write_text(yaml.safe_dump({"name": "inpaint_random", "noise_sigma": 0.05,
                                                      "kwargs": {"missing": 0.5}, "img_size": [3, 32, 32]}))
    out = tmp_path / "x.pt"
    rc = cli(["reconstruct", "--measurement", str(tmp_path / "y.pt"), "--operator-config",
              str(tmp_path / "op.yaml"), "--prior", "natural-rgb", "--solver", "pigdm", "--steps", "2",
              "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "PSNR" not in text and "NFE 2" in text
    saved = torch.load(out, weights_only=True)
    assert saved["mean"].shape == (3, 32, 32) and saved["std"] is None
    assert (tmp_path / "x_figure.png").is_file()


def test_reconstruct_errors(tmp_path, capsys):
    assert cli(["reconstruct", "--operator", "sr4", "--prior", "natural-rgb", "--solver", "ddrm",
                "--out", str(tmp_path / "o.png")]) == 2
    assert "--image" in capsys.readouterr().err
    (tmp_path / "op.yaml").write_text("name: sr4\nnoise_sigmaa: 0.1\n")
    assert cli(["reconstruct", "--measurement", "y.pt", "--operator-config", str(tmp_path / "op.yaml"),
                "--prior", "natural-rgb", "--solver", "ddrm", "--out", str(tmp_path / "o.png")]) == 2
    assert "noise_sigmaa" in capsys.readouterr().err
