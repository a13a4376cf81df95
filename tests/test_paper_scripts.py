"""Paper-table scripts (experiments/paper_*.py): dry runs print the config and the published numbers,
missing checkpoint or data exit with code 2 naming the files and where to get them, and the table
machinery (ours beside the published, best of k runs) works end to end on a tiny stand-in paper."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        yield {name: importlib.import_module(f"paper_{name}") for name in ("dps", "daps", "diffpir")}
    finally:
        sys.path.remove(str(EXPERIMENTS))


def run(module, argv, capsys) -> tuple[int, str, str]:
    code = module.main(module.PAPER, module.__doc__, argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def config_of(text: str) -> dict:
    body = text.split("\n# ", 1)[0]
    return yaml.safe_load(body.split("\n", 1)[1])


def test_dry_runs(scripts, capsys):
    code, out, _ = run(scripts["dps"], ["--dry-run"], capsys)
    assert code == 0
    cfg = config_of(out)
    ops = {o["label"]: o for o in cfg["grids"][0]["operators"]}
    assert ops["random"]["kwargs"] == {"missing": 0.92} and ops["box"]["kwargs"] == {"box": 128}
    assert ops["gauss"]["kwargs"] == {"kernel_size": 61, "std": 3.0}
    assert ops["motion"]["kwargs"] == {"kernel_size": 61, "intensity": 0.5}
    assert {o["noise_sigma"] for o in ops.values()} == {0.025}
    assert cfg["grids"][0]["data"]["size"] == 256 and cfg["grids"][0]["data"]["n"] == 1000
    assert cfg["grids"][0]["solvers"] == [{"name": "dps", "preset": "paper", "label": "DPS"}]
    assert "| SR ×4 | not run | 25.67 |" in out and "| Inpaint (random 92 %) | not run | 9.19 |" in out
    assert "arXiv 2209.14687" in out

    code, out, _ = run(scripts["daps"], ["--dry-run", "--device", "cuda"], capsys)
    assert code == 0 and "(best of 4)" in out and "| Deblur (nonlinear) | not available | 28.29 |" in out
    cfg = config_of(out)
    assert cfg["device"] == "cuda" and cfg["grids"][0]["priors"][0]["kwargs"]["schedule"] == "vp_linear"
    ops = {o["label"]: o for o in cfg["grids"][0]["operators"]}
    assert ops["pr"]["kwargs"] == {"oversample": 2.0} and ops["hdr"]["kwargs"] == {"alpha": 2.0}
    assert ops["random"]["kwargs"] == {"missing": 0.7} and "nl_deblur" not in ops
    assert "4 evaluation(s)" in out  # the main config and three more seeds of phase retrieval

    code, out, _ = run(scripts["diffpir"], ["--dry-run", "--n", "3"], capsys)
    cfg = config_of(out)
    assert code == 0 and cfg["grids"][0]["data"]["files"] == ["69007.png", "69017.png", "69027.png"]
    assert {o["noise_sigma"] for o in cfg["grids"][0]["operators"]} == {0.05}
    assert "| Deblur (Gaussian) | not run | 27.36 |" in out and "| SR ×4 | not run | 26.64 |" in out


def test_missing_files_exit_2(scripts, capsys, tmp_path):
    code, _, err = run(scripts["dps"], [], capsys)
    assert code == 2 and "ffhq_10m.pt" in err and "drive.google.com" in err and "--data" in err
    code, _, err = run(scripts["daps"], ["--checkpoint", str(tmp_path / "no.pt"), "--data",
                                         str(tmp_path)], capsys)
    assert code == 2 and f"{tmp_path / 'no.pt'} does not exist" in err
    assert "holds 0 PNG/JPEG images, fewer than --n 100" in err and "test-ffhq" in err
    ckpt = tmp_path / "ffhq_10m.pt"
    ckpt.write_bytes(b"")
    code, _, err = run(scripts["diffpir"], ["--checkpoint", str(ckpt), "--data", str(tmp_path)], capsys)
    assert code == 2 and "lacks 100 of the 100 listed images (e.g. 69007.png" in err
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "00000.png")
    code, _, err = run(scripts["dps"], ["--checkpoint", str(ckpt), "--data", str(tmp_path), "--n", "1"],
                       capsys)
    assert code == 2 and "smaller than 256 x 256" in err


def test_table_end_to_end_on_a_small_stand_in(scripts, capsys, tmp_path):
    """The real scripts need ffhq_10m.pt; the same machinery on the shipped prior and 16 x 16 images."""
    common = importlib.import_module("paper_common")
    paper = common.Paper(
        name="tiny", title="tiny", citation="nobody", table="Table 0",
        tasks=[common.Task("sr", "SR ×2", "sr2"),
               common.Task("inp", "Inpaint", "inpaint_random", {"missing": 0.5}),
               common.Task("none", "Missing op", None)],
        methods=[common.Method("pigdm", "PiGDM", psnr={"sr": 20.0, "inp": 21.0, "none": 1.0}),
                 common.Method("ddrm", "DDRM", psnr={"sr": 19.0, "inp": 18.0})],
        noise_sigma=0.05, noise_note="test", n_default=2, data_help="two PNGs",
        best_of={"inp": 2}, prior="natural-rgb", image_size=16, checkpoint_arg=None)
    data = tmp_path / "data"
    data.mkdir()
    g = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((g.random((20, 18, 3)) * 255).astype(np.uint8)).save(data / f"{i:05d}.png")
    ckpt = tmp_path / "unused.pt"
    ckpt.write_bytes(b"")
    out = tmp_path / "out"
    argv = ["--checkpoint", str(ckpt), "--data", str(data), "--steps", "3", "--out", str(out)]
    assert common.main(paper, "tiny", argv) == 0
    text = capsys.readouterr().out
    assert "| Missing op | not available | 1.00 |" in text
    assert "| SR ×2 | failed: ValueError" in text  # DDRM refuses the non-decomposable SR operator
    assert "| Inpaint (best of 2) |" in text and text.count("| 2 |") == 3
    # best of 2: per image the better of the two seeds' PSNR
    from invsolve.evaluation.rows import read_rows

    rows = [r for r in read_rows(out / "results.jsonl") if r["labels"]["operator"] == "inp"
            and r["labels"]["solver"] == "PiGDM"]
    assert sorted({r["key"]["seed"] for r in rows}) == [0, 1] and len(rows) == 4
    best = {}
    for r in rows:
        best[r["key"]["item"]] = max(best.get(r["key"]["item"], -1e9), r["metrics"]["psnr"])
    found = common.collect(paper, [common.build_config(paper, ckpt, data, 2, steps=3),
                                   common.build_config(paper, ckpt, data, 2, steps=3, seed=1,
                                                       only={"inp"})], out)
    assert sorted(found[("PiGDM", "inp")]["psnr"]) == sorted(best.values())
    assert (out / "paper_table.md").exists() and (out / "table.md").exists()
    # a rerun resumes: nothing is computed again, the same table comes out
    assert common.main(paper, "tiny", argv) == 0
    assert capsys.readouterr().out.split("rows:")[0] == text.split("rows:")[0]
