"""``invsolve tune``: a tiny study on the mixture writes a loadable preset, continues with a larger
budget, resumes an interrupted trial with the same values, and never shares items with the test split.

DDRM at 3 steps on two validation mixture problems (d = 8, 64 chains) keeps each trial well under a
second.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("optuna")

import invsolve
from invsolve.cli import main as cli
from invsolve.evaluation import tune as T
from invsolve.evaluation.config import (
    DarcyTest,
    EllipsePhantoms,
    GMMData,
    NaturalRGBTest,
)
from invsolve.evaluation.data import load_dataset, natural_region
from invsolve.evaluation.gmm import make_case


def gmm_config(**over) -> dict:
    cfg = {"name": "gmm-ddrm", "seed": 1, "dtype": "float64",
           "data": {"name": "gmm", "dim": 8, "dim_y": 2, "n": 2, "samples": 64, "split": "val"},
           "solver": {"name": "ddrm", "steps": 3},
           "space": {"eta": {"type": "float", "low": 0.0, "high": 1.0},
                     "eta_b": {"type": "categorical", "choices": [0.5, 1.0]}},
           "trials": 3, "startup_trials": 2}
    cfg.update(over)
    return cfg


def counted(study) -> list[tuple]:
    return [(t.params["eta"], t.params["eta_b"], t.value) for t in T._counted(study)]


def test_tiny_tune_writes_loadable_preset_and_continues(tmp_path):
    res = T.tune(gmm_config(), tmp_path / "a", progress=False)
    assert len(T._counted(res.study)) == 3
    doc = json.loads(res.preset.read_text())
    assert doc["solver"] == "ddrm" and doc["trials"] == 3 and doc["objective"]["metric"] == "sw"
    assert doc["hyperparameters"]["steps"] == 3 and set(doc["validation"]["items"]) == {
        "gmm/d8/dy2/syrandom/val/p1000000", "gmm/d8/dy2/syrandom/val/p1000001"}
    # trial 0 is the solver's default (eta 0.85, eta_b 1.0); the best can only be as good or better
    assert doc["objective"]["base_hyperparameters"] == {"eta": 0.85, "eta_b": 1.0}
    assert doc["objective"]["value"] <= doc["objective"]["base_value"]
    # the preset loads in solve() and in evaluation configs
    from invsolve import solvers

    assert solvers.get("ddrm").preset_values(res.preset) == doc["hyperparameters"]
    case = make_case(8, 2, 0)
    out = invsolve.solve(case.problem.repeat(4), case.prior, "ddrm", seed=0, preset=str(res.preset))
    assert out.nfe == 3 and torch.isfinite(out.x).all()
    first = counted(res.study)

    # a second call with a larger budget continues the same study ...
    more = T.tune(gmm_config(), tmp_path / "a", trials=5, progress=False)
    assert counted(more.study)[:3] == first and len(counted(more.study)) == 5
    # ... and equals a 5-trial study run at once (the sampler is re-seeded per trial)
    once = T.tune(gmm_config(trials=5), tmp_path / "b", progress=False)
    assert counted(once.study) == counted(more.study)
    # a changed config is refused instead of mixing two studies
    with pytest.raises(ValueError, match="different config"):
        T.tune(gmm_config(seed=2), tmp_path / "a", progress=False)


def test_interrupted_trial_is_asked_again(tmp_path):
    reference = counted(T.tune(gmm_config(trials=4), tmp_path / "ref", progress=False).study)
    cfg = T.load_tune_config(gmm_config(trials=4))
    T.tune(cfg, tmp_path / "cut", trials=2, progress=False)
    # a process killed in trial 2: asked and half-evaluated, never told
    study = T.open_study(cfg, tmp_path / "cut")
    study.sampler = T._sampler(cfg, cfg.sampler_seed + 2)
    trial = study.ask()
    params = {k: p.suggest(trial, k) for k, p in cfg.space.items()}
    res = T.tune(cfg, tmp_path / "cut", progress=False)
    states = [t.state.name for t in res.study.trials]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 4
    assert res.study.trials[3].params == params  # the interrupted values, asked again
    assert counted(res.study) == reference


def test_cli_tune_and_failed_trials(tmp_path, capsys):
    cfg = gmm_config(trials=2, space={"eta": {"type": "float", "low": 0.0, "high": 1.0}})
    path = tmp_path / "tune.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    assert cli(["tune", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "preset:" in text and "| trial | eta | sw | note |" in text
    assert (tmp_path / "o" / "preset.json").exists() and (tmp_path / "o" / "trials.md").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**cfg, "space": {"etaa": {"type": "float", "low": 0, "high": 1}}}))
    assert cli(["tune", str(bad), "--no-progress"]) == 2
    assert "has no hyperparameter 'etaa'" in capsys.readouterr().err


@pytest.mark.parametrize("patch, message", [
    ({"data": {"name": "gmm", "n": 2}}, "split: val"),
    ({"data": {"name": "shepp-logan"}}, "no validation split"),
    ({"space": {"eta": {"type": "float", "low": 1.0, "high": 0.5}}}, "must exceed low"),
    ({"space": {"eta": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}}, "low > 0"),
    ({"solver": {"name": "ddrm", "steps": 3, "hp": {"eta": 0.5}}}, "also fixed"),
    ({"metric": "psnr"}, "metric sw"),
    ({"test": {"name": "gmm", "n": 2, "split": "val"}}, "split: test"),
    ({"sampler": "grid"}, "categorical parameters only"),
    ({"solver": {"name": "ddrm", "steps": 3, "samples": 4}}, "for evaluation grids"),
])
def test_config_errors(patch, message):
    with pytest.raises(ValueError, match=message):
        T.load_tune_config(gmm_config(**patch))


def test_validation_and_test_items_are_disjoint():
    for size in (16, 32, 64):
        val = load_dataset(NaturalRGBTest(name="natural-rgb-test", size=size, n=3, split="val"))
        test = load_dataset(NaturalRGBTest(name="natural-rgb-test", size=size, n=20, split="test"))
        T.check_disjoint(val, test)
        regions = [natural_region(i) for i in test.ids]
        assert not any(T._overlap(natural_region(v), t) for v in val.ids for t in regions)
    # every cell of one size is in exactly one split, and the test split keeps its old order
    from invsolve.evaluation.data import natural_cells

    cells = natural_cells(32)
    assert not set(cells["val"]) & set(cells["test"]) and len(cells["val"]) == 31
    # crops of different sizes can overlap: the check catches it
    big = load_dataset(NaturalRGBTest(name="natural-rgb-test", size=64, n=21, split="test"))
    small = load_dataset(NaturalRGBTest(name="natural-rgb-test", size=16, n=126, split="val"))
    with pytest.raises(ValueError, match="overlaps"):
        T.check_disjoint(small, big)
    with pytest.raises(ValueError, match="share"):
        T.check_disjoint(test, test)
    # mixture problems: other seeds, other matrices
    gv = load_dataset(GMMData(name="gmm", n=3, split="val"))
    gt = load_dataset(GMMData(name="gmm", n=3))
    T.check_disjoint(gv, gt)
    a_val = make_case(8, 2, gv.spec.problem_seed(0)).problem.operator.matrix
    a_test = make_case(8, 2, gt.spec.problem_seed(0)).problem.operator.matrix
    assert not torch.allclose(a_val, a_test)
    for cls, kw in ((DarcyTest, {"name": "darcy-test", "n": 2, "size": 32}),
                    (EllipsePhantoms, {"name": "ellipse-phantoms", "n": 2, "size": 32})):
        v, t = load_dataset(cls(**kw, split="val")), load_dataset(cls(**kw, split="test"))
        T.check_disjoint(v, t)
        assert not torch.equal(v.x, t.x)


def test_tuned_preset_in_an_evaluation_config(tmp_path):
    res = T.tune(gmm_config(trials=2, test={"name": "gmm", "dim": 8, "dim_y": 2, "n": 1,
                                            "samples": 64}), tmp_path, progress=False)
    table = res.test_table.read_text()
    assert "| base |" in table and "| tuned |" in table
    assert Path(res.preset).parent == tmp_path


def test_grid_sampler_visits_each_point_once(tmp_path):
    cfg = gmm_config(sampler="grid", trials=10, include_base=False,
                     space={"eta": {"type": "categorical", "choices": [0.0, 0.5, 1.0]}})
    res = T.tune(cfg, tmp_path, progress=False)
    assert [t.params["eta"] for t in T._counted(res.study)] == [0.0, 0.5, 1.0]
