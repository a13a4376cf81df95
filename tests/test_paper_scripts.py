"""The paper-table scripts (experiments/paper_*.py) without the checkpoint and data they need: a clear
list of what is missing (exit 2), and a dry run that prints the generated config beside the published
numbers it will be compared with."""

import importlib.util
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
PUBLISHED = {"paper_dps": "25.67", "paper_daps": "29.07", "paper_diffpir": "27.36"}


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXPERIMENTS))
    return module


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_missing_inputs_are_listed(name, capsys, tmp_path):
    module = _load(name)
    assert module.main(module.PAPER, module.__doc__, []) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "--data" in err and "--dry-run" in err
    assert module.main(module.PAPER, module.__doc__, ["--checkpoint", str(tmp_path / "nope.pt"),
                                                      "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope.pt" in err


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_dry_run_prints_config_and_published_numbers(name, capsys):
    module = _load(name)
    assert module.main(module.PAPER, module.__doc__, ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "grids:" in out and PUBLISHED[name] in out and "arXiv" in out


def test_robustness_recheck_lists_flagged_cells_on_the_mean(tmp_path):
    """matrix() flags a cell > 1 dB below pinv (one-sample rows only); recheck_table() reports the same
    cell on its mean-of-k rows and says whether it is still flagged; recheck_config() asks for k samples."""
    import json

    module = _load("robustness")

    def row(solver, psnr, samples=None):
        s = {"name": solver, **({"samples": samples} if samples else {})}
        return {"key": {"operator": {"name": "sr4"}, "noise_sigma": 0.0, "solver": s},
                "metrics": {"psnr": psnr}, "error": None}

    rows = [row("pinv", 28.0), row("dps", 26.0), row("ddrm", 27.5), row("dps", 28.5, 4)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text, cells = module.matrix(tmp_path)
    assert cells == [("sr4", 0.0, "dps")] and "**26.00**" in text and "28.50" not in text
    table, still = module.recheck_table(tmp_path, cells, 4)
    assert still == 0 and "| sr4 | 0 | dps | 28.00 | 26.00 | 28.50 | no |" in table
    cfg = module.recheck_config(cells, 4, 32, 2)
    assert cfg["grids"][0]["solvers"] == [{"name": "dps", "samples": 4}]
    assert module.recheck_config([], 4, 32, 2) is None


def test_robustness_matrix_keeps_only_the_rows_its_config_holds(tmp_path):
    """A row made under older hyperparameters (a solver option added since) is not averaged into the
    matrix: only the latest row of each key of the config counts."""
    import json

    from invsolve.evaluation.config import dump_config, load_config
    from invsolve.evaluation.plan import make_plan

    module = _load("robustness")
    cfg = module.config(module.solvers_to_run(["dps"]), ["sr4"], [0.0], 16, 1, {})
    (tmp_path / "config.yaml").write_text(dump_config(load_config(cfg)))
    plan = make_plan(load_config(cfg))
    rows = []
    for t in plan.tasks():
        key = plan.key(t)
        rows.append({"key": key, "metrics": {"psnr": 28.0 if key["solver"]["name"] == "pinv" else 27.5},
                     "error": None})
        if key["solver"]["name"] == "dps":  # the same cell under an older form of the key
            old = {**key, "solver": {"name": "dps", "hp": {"steps": 100}}}
            rows.append({"key": old, "metrics": {"psnr": 20.0}, "error": None})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text, cells = module.matrix(tmp_path)
    assert cells == [] and "| sr4 | 0 | 28.00 | 27.50 |" in text


def test_robustness_recheck_without_solving_lists_cells_not_run(tmp_path):
    """--recheck K --no-solve files the recheck config of the flagged cells and lists them from the rows
    at hand: a cell without mean-of-K rows shows "not run", and nothing is solved."""
    import json

    from invsolve.evaluation.config import dump_config, load_config
    from invsolve.evaluation.plan import make_plan

    module = _load("robustness")
    cfg = module.config(module.solvers_to_run(["dps"]), ["sr4"], [0.0], 16, 1, {})
    (tmp_path / "config.yaml").write_text(dump_config(load_config(cfg)))
    plan = make_plan(load_config(cfg))
    rows = [{"key": plan.key(t), "metrics": {"psnr": 28.0 if plan.key(t)["solver"]["name"] == "pinv" else 26.0},
             "error": None} for t in plan.tasks()]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["--table-only", "--recheck", "4", "--no-solve", "--out", str(tmp_path), "--size", "16", "--n", "1"]
    assert module.main(argv) == 0
    text = (tmp_path / "matrix.md").read_text()
    assert "**26.00**" in text and "| sr4 | 0 | dps | 28.00 | 26.00 | not run | |" in text
    recheck = load_config(tmp_path / "recheck_config.yaml")
    assert [s.samples for g in recheck.grids for s in g.solvers] == [4]
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == len(rows)


def test_robustness_variants_go_elsewhere_and_build_their_own_matrix(tmp_path):
    """--hp / --samples rows are not the matrix's: refused in the matrix's folder, and an unreadable
    --hp is a clear error; config() puts hp and samples on every solver; matrix(out, k) reads the
    mean-of-k rows only."""
    import json

    module = _load("robustness")
    with pytest.raises(SystemExit, match="give --out another folder"):
        module.main(["--solvers", "mcg", "--hp", 'mcg={"zeta": 0.3}', "--table-only"])
    with pytest.raises(SystemExit, match="give SOLVER=JSON"):
        module.main(["--hp", "mcg=zeta:0.3", "--out", str(tmp_path), "--table-only"])
    cfg = module.config(["mcg", "pinv"], ["sr4"], [0.0], 16, 1, {"mcg": {"zeta": 0.3, "steps": 50}}, samples=4)
    assert cfg["grids"][0]["solvers"] == [{"name": "mcg", "steps": 50, "hp": {"zeta": 0.3}, "samples": 4},
                                          {"name": "pinv", "samples": 4}]

    def row(solver, psnr, samples=None):
        s = {"name": solver, **({"samples": samples} if samples else {})}
        return {"key": {"operator": {"name": "sr4"}, "noise_sigma": 0.0, "solver": s},
                "metrics": {"psnr": psnr}, "error": None}

    rows = [row("pinv", 28.0), row("mcg", 26.0), row("pinv", 28.1, 4), row("mcg", 27.5, 4)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text, cells = module.matrix(tmp_path, 4)
    assert cells == [] and "| sr4 | 0 | 28.10 | 27.50 |" in text


@pytest.mark.parametrize("name,shipped", [("image_restoration", "natural-rgb"), ("ct_sparse_view", "phantom-ct"),
                                          ("mri", "phantom-ct")])
def test_restoration_scripts_take_a_run_folder_as_prior(name, shipped, tmp_path):
    """--prior-path puts a training run (e.g. one in progress under runs/) in place of the shipped
    prior for every posterior solver; without it the shipped prior is used."""
    module = _load(name)
    ap = module.parser(module.__doc__, module.SOLVERS, tmp_path, n_val=1, quick="", prior=shipped)
    for argv, expected in (([], shipped),
                           (["--prior-path", str(tmp_path / "my-run")],
                            {"name": "trained", "kwargs": {"path": str(tmp_path / "my-run")}, "label": "my-run"})):
        args = ap.parse_args(argv)
        args.solvers = ["pigdm"]
        if name == "image_restoration":
            args.tasks, args.n, args.size, args.noise = ["sr4"], 1, 16, 0.02
        presets = {k: tmp_path / "preset.yaml" for k in ((a, b) for a in getattr(module, "ACCELERATIONS", ())
                                                          for b in module.TUNED)}
        config = module.build_config(args, presets)
        assert [g["priors"] for g in config["grids"]] == [[expected]] * len(config["grids"])
