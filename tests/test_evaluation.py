"""The evaluation runner: rows, resume after a kill, batch-size and torchrun invariance, config errors.

One small grid throughout (float64, so rows agree across batchings to rounding): four random 16 x 16
images under random inpainting with the shipped natural-rgb prior (DDRM 3 steps, DiffPIR 2 steps),
and two mixture problems (d = 8) with DDRM beside the exact-posterior floor and the prior.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import invsolve
from invsolve.cli import main as cli
from invsolve.evaluation import runner
from invsolve.evaluation.config import load_config
from invsolve.evaluation.rows import RowWriter, close_rows, latest_by_key, read_rows

N_ROWS = 4 * 2 + 2 * 3  # images x solvers + mixture problems x (floor, prior, ddrm)


def make_config(data: Path, batch_size: int = 2) -> dict:
    return {"name": "test", "seed": 3, "dtype": "float64", "batch_size": batch_size, "figure_items": 1,
            "grids": [
                {"data": {"name": "tensor", "path": str(data), "n": 4},
                 "operators": [{"name": "inpaint_random", "noise_sigma": 0.05, "kwargs": {"missing": 0.5}}],
                 "priors": ["natural-rgb"],
                 "solvers": [{"name": "ddrm", "steps": 3}, {"name": "diffpir", "steps": 2}]},
                {"data": {"name": "gmm", "dim": 8, "dim_y": 2, "n": 2, "samples": 64},
                 "solvers": [{"name": "ddrm", "steps": 3}]}]}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "images.pt"
    g = torch.Generator().manual_seed(0)
    torch.save(torch.rand(5, 3, 16, 16, generator=g), path)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_file) -> Path:
    """One uninterrupted single-process run of the test grid."""
    return invsolve.evaluate(make_config(data_file), tmp_path_factory.mktemp("ref"), progress=False)


def rows_of(out: Path) -> dict[str, dict]:
    return latest_by_key(read_rows(out / "results.jsonl"))


def same_rows(a: dict[str, dict], b: dict[str, dict], rel: float = 1e-9) -> bool:
    return a.keys() == b.keys() and all(close_rows(a[k], b[k], rel) for k in a)


def table_without_timing(path: Path) -> str:
    """table.md with its wall-time column ("s") removed."""
    out, drop, in_table = [], None, False
    for line in path.read_text().splitlines():
        if line.startswith("|"):
            cells = line.split("|")
            if not in_table:  # a header line
                drop = cells.index(" s ") if " s " in cells else None
            if drop is not None and "---" not in line:
                del cells[drop]
            line = "|".join(cells)
        in_table = line.startswith("|")
        out.append(line)
    return "\n".join(out)


def test_outputs(reference):
    rows = read_rows(reference / "results.jsonl")
    assert len(rows) == N_ROWS == len(rows_of(reference))
    assert not list(reference.glob("results.rank*.jsonl"))
    for r in rows:
        assert r["error"] is None and r["key"]["seed"] == 3 and r["key"]["dtype"] == "float64"
    images = [r for r in rows if r["key"]["operator"]["name"] == "inpaint_random"]
    assert {r["key"]["operator"]["kwargs"]["img_size"] == [3, 16, 16] for r in images} == {True}
    assert all(5 < r["metrics"]["psnr"] < 60 and 0 < r["metrics"]["ssim"] <= 1 for r in images)
    assert all(r["nfe"] == r["key"]["solver"]["hp"]["steps"] for r in images)
    assert all(r["metrics"]["lpips"] is None and "backbone" in r["unavailable"]["lpips"] for r in images)
    ddrm = [r for r in images if r["key"]["solver"]["name"] == "ddrm"]
    assert ddrm[0]["key"]["solver"]["hp"]["eta"] == 0.85  # resolved defaults are part of the key
    gmm = [r for r in rows if r["key"]["operator"]["name"] == "gmm-case"]
    sw = {r["key"]["solver"]["name"]: r["metrics"]["sw"] for r in gmm if r["key"]["item"].endswith("p0")}
    assert sw["reference:floor"] < sw["ddrm"] < sw["reference:prior"]
    table = (reference / "table.md").read_text()
    assert "| inpaint_random(missing=0.5) σ=0.05 | natural-rgb | ddrm@3 | 4 |" in table
    assert "exact posterior (floor)" in table and "LPIPS unavailable" in table
    assert (reference / "grid.png").stat().st_size > 5000
    assert load_config(reference / "config.yaml").seed == 3
    env = json.loads((reference / "env.json").read_text())
    assert {"torch", "deepinv", "invsolve", "numpy", "device_name", "threads"} <= env.keys()
    # figure items (the first item of each cell) point to saved tensors
    firsts = [r for r in images if r.get("images")]
    assert len(firsts) == 2 and all((reference / r["images"]["x_hat"]).is_file() for r in firsts)


def test_rerun_skips_and_table_only_rebuilds(reference, tmp_path, data_file):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    before = (out / "results.jsonl").read_bytes()
    invsolve.evaluate(make_config(data_file), out, progress=False)
    assert (out / "results.jsonl").read_bytes() == before  # nothing repeated
    table = (out / "table.md").read_text()
    (out / "table.md").unlink()
    (out / "grid.png").unlink()
    assert cli(["evaluate", str(out / "config.yaml"), "--out", str(out), "--table-only"]) == 0
    assert (out / "table.md").read_text() == table and (out / "grid.png").is_file()


def test_rows_of_other_weights_are_run_again(reference, tmp_path, data_file):
    """Rows record the prior's weights; after a retrained checkpoint under the same name (here: rows
    edited to name other weights) a rerun replaces them, and leaves rows without the record alone."""
    rows = read_rows(reference / "results.jsonl")
    image_rows = [r for r in rows if r.get("prior_weights")]
    assert len(image_rows) == 8 and {r["prior_weights"] for r in image_rows} == {
        runner.weights_id(invsolve.priors.load("natural-rgb"))}
    for edit, reruns in (({"prior_weights": "0" * 16}, 8), ({"prior_weights": None}, 0)):
        out = tmp_path / str(reruns)
        out.mkdir()
        with RowWriter(out / "results.jsonl") as w:
            for r in rows:
                w.write({**r, **edit} if r.get("prior_weights") else r)
        invsolve.evaluate(make_config(data_file), out, progress=False)
        assert len(read_rows(out / "results.jsonl")) == len(rows) + reruns
        if reruns:  # the same seeds: the rerun rows equal the reference's
            assert same_rows(rows_of(out), rows_of(reference))


def test_kill_and_resume_exception(reference, tmp_path, data_file, monkeypatch):
    k = random.Random(13).randrange(1, N_ROWS)  # interrupt after k rows
    write = RowWriter.write
    count = {"n": 0}

    def failing(self, row):
        if count["n"] == k:
            raise KeyboardInterrupt("injected")
        count["n"] += 1
        write(self, row)

    out = tmp_path / "run"
    monkeypatch.setattr(RowWriter, "write", failing)
    with pytest.raises(KeyboardInterrupt):
        invsolve.evaluate(make_config(data_file), out, progress=False)
    monkeypatch.setattr(RowWriter, "write", write)
    assert len(read_rows(out / "results.jsonl")) == k
    invsolve.evaluate(make_config(data_file), out, progress=False)
    rows = read_rows(out / "results.jsonl")
    assert len(rows) == N_ROWS  # nothing lost, nothing repeated
    assert same_rows(rows_of(out), rows_of(reference))
    assert table_without_timing(out / "table.md") == table_without_timing(reference / "table.md")


def test_kill_and_resume_sigkill(reference, tmp_path, data_file):
    """A subprocess killed (SIGKILL) after its third row; the rerun completes the same rows."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(make_config(data_file)))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "invsolve.evaluate", str(cfg), "--out", str(out),
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path, deadline = out / "results.jsonl", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_rows(path))
    assert 3 <= done < N_ROWS, f"the subprocess was not stopped mid-run ({done} rows)"
    invsolve.evaluate(cfg, out, progress=False)
    assert len(read_rows(path)) == N_ROWS
    assert same_rows(rows_of(out), rows_of(reference))
    assert table_without_timing(out / "table.md") == table_without_timing(reference / "table.md")


def test_truncated_last_line_is_dropped(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"key": {"a": 1}}) + "\n" + '{"key": {"a"')
    with pytest.warns(UserWarning, match="incomplete last line"):
        assert len(read_rows(path)) == 1
    assert path.read_text().endswith("}\n")
    path.write_text('{"key": 1\n' + json.dumps({"key": {"a": 1}}) + "\n")
    with pytest.raises(ValueError, match="line 1 is not valid JSON"):
        read_rows(path)


def test_batch_size_invariance(reference, tmp_path, data_file):
    out = invsolve.evaluate(make_config(data_file, batch_size=1), tmp_path / "b1", progress=False)
    assert {r["batch_size"] for r in read_rows(out / "results.jsonl")} == {1}
    assert same_rows(rows_of(out), rows_of(reference))
    out4 = invsolve.evaluate(make_config(data_file, batch_size=4), tmp_path / "b4", progress=False)
    assert same_rows(rows_of(out4), rows_of(reference))


def test_torchrun_two_processes(reference, tmp_path, data_file):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH (it comes with torch: pip install torch)")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(make_config(data_file)))
    out = tmp_path / "dist"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "invsolve.evaluate",
                           str(cfg), "--out", str(out), "--no-progress"], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(out / "results.jsonl")
    assert len(rows) == N_ROWS and not list(out.glob("results.rank*.jsonl"))
    assert {r["rank"] for r in rows} == {0, 1} and {r["world_size"] for r in rows} == {2}
    assert same_rows(rows_of(out), rows_of(reference))
    assert json.loads((out / "env.json").read_text())["world_size"] == 2


def test_shards_merge_idempotent(reference, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    rows = read_rows(reference / "results.jsonl")
    with RowWriter(out / "results.jsonl") as w:
        for r in rows[:5]:
            w.write(r)
    for rank, part in enumerate((rows[3:9], rows[9:])):
        with RowWriter(out / f"results.rank{rank}.jsonl") as w:
            for r in part:
                w.write(r)
    assert runner.merge_shards(out) == len(rows) - 5
    assert len(read_rows(out / "results.jsonl")) == len(rows)
    assert not list(out.glob("results.rank*.jsonl")) and runner.merge_shards(out) == 0


@pytest.mark.parametrize("patch, message", [
    ({"batchsize": 2}, "batchsize"),
    ({"grids": [{"data": {"name": "gmm", "dimm": 8}, "solvers": ["ddrm"]}]}, "grids.0.data.gmm.dimm"),
    ({"grids": [{"data": {"name": "gmm"}, "solvers": [{"name": "ddrm", "stpes": 3}]}]},
     "grids.0.solvers.0.stpes"),
    ({"grids": [{"data": {"name": "gmm"}, "solvers": [{"name": "ddrm", "hp": {"etaa": 1}}]}]},
     "ddrm has no hyperparameter(s) ['etaa']"),
    ({"grids": [{"data": {"name": "gmm"}, "solvers": ["ddrn"]}]}, "unknown solver 'ddrn'; available:"),
    ({"grids": [{"data": {"name": "shepp-logan", "size": 32}, "operators": ["sr5"], "priors": ["phantom-ct"],
                 "solvers": ["ddrm"]}]}, "unknown operator 'sr5'; available:"),
    ({"grids": [{"data": {"name": "shepp-logan", "size": 32}, "operators": ["sr4"], "priors": ["phantom"],
                 "solvers": ["ddrm"]}]}, "unknown prior 'phantom'; available:"),
    ({"grids": [{"data": {"name": "gmm"}, "operators": ["sr4"], "solvers": ["ddrm"]}]},
     "brings its own operator"),
    ({"device": "tpu"}, "device"),
])
def test_config_errors_name_the_key(patch, message):
    base = {"grids": [{"data": {"name": "gmm"}, "solvers": ["ddrm"]}]}
    with pytest.raises(ValueError) as err:
        load_config({**base, **patch})
    assert message in str(err.value)


def test_config_file_error_from_cli(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("grids:\n  - data: {name: gmm, n: 0}\n    solvers: [ddrm]\n")
    assert cli(["evaluate", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "grids.0.data.gmm.n" in err
    assert not (tmp_path / "o").exists()


def test_failures_are_rows_and_retry(tmp_path, data_file):
    """A solver that cannot handle the operator records failed rows (with the reason) in the table."""
    cfg = {"name": "fail", "dtype": "float64", "figure_items": 0,
           "grids": [{"data": {"name": "tensor", "path": str(data_file), "n": 2},
                      "operators": [{"name": "sr4", "noise_sigma": 0.05}], "priors": ["natural-rgb"],
                      "solvers": [{"name": "ddrm", "steps": 2}]}]}
    out = invsolve.evaluate(cfg, tmp_path / "f", progress=False)
    rows = read_rows(out / "results.jsonl")
    assert len(rows) == 2 and all("decomposable" in r["error"] for r in rows)
    assert "2 (2 failed)" in (out / "table.md").read_text()
    invsolve.evaluate(cfg, out, progress=False, retry_failed=True)
    assert len(read_rows(out / "results.jsonl")) == 4 and len(rows_of(out)) == 2


def test_natural_rgb_test_crops_are_a_stable_prefix():
    from invsolve.evaluation.config import NaturalRGBTest
    from invsolve.evaluation.data import load_dataset

    a = load_dataset(NaturalRGBTest(name="natural-rgb-test", size=32, n=2))
    b = load_dataset(NaturalRGBTest(name="natural-rgb-test", size=32, n=5))
    assert a.ids == b.ids[:2] and len(set(b.ids)) == 5 and torch.equal(a.x, b.x[:2])
    assert a.x.shape == (2, 3, 32, 32)


def test_lpips_from_local_weights_only(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    pytest.importorskip("torchmetrics")
    from invsolve.evaluation.metrics import LPIPS

    with pytest.raises(ValueError, match="do not exist"):
        LPIPS(tmp_path / "missing.pth")
    path = tmp_path / "alexnet.pth"  # a randomly initialised AlexNet stands in for the real weights
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    lpips = LPIPS(path)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.all(lpips(x, x) == 0)
    assert torch.all(lpips((x + 0.2).clamp(0, 1), x) > 0)
    with pytest.raises(ValueError, match="at least 31"):
        lpips(x[..., :16, :16], x[..., :16, :16])


def test_preset_from_tuned_file(tmp_path):
    from invsolve import solvers

    if not hasattr(solvers.get("ddrm"), "preset_values"):
        pytest.skip("this invsolve has no solver presets yet")
    preset = tmp_path / "ddrm_tuned.json"
    preset.write_text(json.dumps({"solver": "ddrm", "hyperparameters": {"eta": 0.5}}))
    cfg = {"grids": [{"data": {"name": "gmm", "n": 1, "samples": 32},
                      "solvers": [{"name": "ddrm", "steps": 2, "preset": str(preset)}]}]}
    out = invsolve.evaluate(cfg, tmp_path / "p", progress=False)
    row = next(r for r in read_rows(out / "results.jsonl") if r["key"]["solver"]["name"] == "ddrm")
    assert row["key"]["solver"]["preset"] == str(preset) and row["key"]["solver"]["hp"]["eta"] == 0.5
    assert row["error"] is None and row["nfe"] == 2


def test_module_entry_stays_callable(reference, data_file):
    import invsolve.evaluate  # rebinds the package attribute to the -m module, which forwards

    assert invsolve.evaluate(make_config(data_file), reference, table_only=True) == reference


def test_quick_config_is_valid():
    cfg = load_config(Path(__file__).resolve().parents[1] / "experiments" / "configs" / "quick.yaml")
    assert cfg.name == "quick" and len(cfg.grids) == 2


def test_labels_with_a_pipe_keep_the_table_columns(tmp_path, data_file):
    cfg = make_config(data_file)
    cfg["grids"] = cfg["grids"][:1]
    cfg["grids"][0]["operators"][0]["label"] = "noise 5 % of mean |y|"
    cfg["grids"][0]["solvers"] = [{"name": "ddrm", "steps": 2}]
    invsolve.evaluate(cfg, tmp_path / "pipe", progress=False)
    rows = [line for line in (tmp_path / "pipe" / "table.md").read_text().splitlines() if line.startswith("|")]
    count = {len(re.findall(r"(?<!\\)\|", line)) for line in rows}
    assert len(count) == 1 and "mean \\|y\\|" in rows[-1]


def test_posterior_mean_of_several_samples(reference, tmp_path, data_file):
    """samples: k scores the mean of k chains per item; chain 0 is the one-sample row's own draw, so the
    mean of 3 differs from it and sits closer to the truth on average (it estimates the posterior mean)."""
    cfg = make_config(data_file)
    cfg["grids"] = cfg["grids"][:1]
    cfg["grids"][0]["solvers"] = [{"name": "ddrm", "steps": 3}, {"name": "ddrm", "steps": 3, "samples": 3}]
    out = invsolve.evaluate(cfg, tmp_path / "mean", progress=False)
    rows = list(rows_of(out).values())
    one = {r["key"]["item"]: r for r in rows if "samples" not in r["key"]["solver"]}
    mean = {r["key"]["item"]: r for r in rows if r["key"]["solver"].get("samples") == 3}
    assert len(one) == len(mean) == 4 and all(r["labels"]["solver"] == "ddrm@3 mean of 3" for r in mean.values())
    ref = {r["key"]["item"]: r for r in rows_of(reference).values() if r["key"]["solver"]["name"] == "ddrm"
           and "item" in r["key"] and r["key"].get("operator")}
    for item, r in one.items():  # adding the option changed no single-sample row
        assert r["metrics"]["psnr"] == pytest.approx(ref[item]["metrics"]["psnr"], rel=1e-9)
    gain = [mean[i]["metrics"]["psnr"] - one[i]["metrics"]["psnr"] for i in one]
    assert all(abs(g) > 1e-6 for g in gain) and sum(gain) > 0
    assert all(r["nfe"] == 3 for r in mean.values())


def test_posterior_mean_refused_on_the_mixture(data_file):
    cfg = make_config(data_file)
    cfg["grids"][1]["solvers"] = [{"name": "ddrm", "steps": 3, "samples": 2}]
    with pytest.raises(ValueError, match="data.samples"):
        load_config(cfg)


def test_measurement_picture_of_a_large_adjoint_is_rescaled_not_blank():
    """When A^+ y and A^T y both leave the data range (CT: A^T scales by ~||A||^2, a clipped panel is
    blank), A^T y is shown mapped onto the data range; an in-range A^+ y is shown as it is."""
    from invsolve import operators
    from invsolve.evaluation.report import measurement_image

    g = torch.Generator().manual_seed(0)
    op = operators.Matrix(100 * torch.randn(6, 16, generator=g, dtype=torch.float64))
    x = torch.rand(2, 16, generator=g, dtype=torch.float64)
    y = op.A(x) + 50 * torch.randn(2, 6, generator=g, dtype=torch.float64)
    m, kind = measurement_image(op, y, (16,))
    assert kind == "Aᵀy (rescaled)" and torch.allclose(m.amin(1), torch.zeros(2, dtype=m.dtype))
    assert torch.allclose(m.amax(1), torch.ones(2, dtype=m.dtype))
    mask = operators.build("inpaint_random", img_size=(1, 8, 8), missing=0.5)
    xi = torch.rand(1, 1, 8, 8, generator=g)
    assert measurement_image(mask, mask.A(xi), (1, 8, 8))[1] == "A⁺y"


def test_solver_key_leaves_out_options_at_their_former_behaviour():
    """An option a solver gained after results were recorded (``key_neutral``) is absent from the result
    key at the value that runs the former algorithm, so recorded rows stay valid, and present at any
    other value, so a new setting never reuses them."""
    from invsolve.evaluation.config import SolverSpec
    from invsolve.evaluation.plan import solver_key

    plain = solver_key(SolverSpec(name="daps", steps=5), "sr4")["hp"]
    explicit = solver_key(SolverSpec(name="daps", steps=5, hp={"ode_method": "euler"}), "sr4")["hp"]
    heun = solver_key(SolverSpec(name="daps", steps=5, hp={"ode_method": "heun"}), "sr4")["hp"]
    assert "ode_method" not in plain and plain == explicit
    assert heun["ode_method"] == "heun" and {k: v for k, v in heun.items() if k != "ode_method"} == plain
