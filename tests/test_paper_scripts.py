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
