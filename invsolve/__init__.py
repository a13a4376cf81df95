"""invsolve: inverse problems y = A(x) + noise with diffusion and flow priors.

Problem (operator + measurement), Prior (a denoiser for every noise level), Solver (one posterior method).
"""

# Dependency order (DESIGN.md): paths, problem, operators, priors, solvers; evaluation on top.
from . import paths  # noqa: I001
from .problem import Problem
from . import operators, priors, solvers
from .solvers import Result
from .evaluation import baselines as _baselines  # noqa: F401  (registers bicubic, tv, fbp, ... as solvers)
from .evaluation.api import evaluate


def solve(problem: Problem, prior: "priors.Prior", name: str, seed=0, preset=None,
          **hyperparameters) -> Result:
    """Short form of ``solvers.get(name)(**hyperparameters).solve(problem, prior, seed=seed)``.

    ``preset``: official per-task settings ("paper": the task is the operator's registry name;
    "paper:sr4" names it), a dict, or a preset file from ``invsolve tune``; explicit
    ``hyperparameters`` override the preset's values. ``invsolve list`` shows the presets.
    """
    cls = solvers.get(name)
    valid = cls.hyperparameters()
    unknown = sorted(set(hyperparameters) - set(valid))
    if unknown:
        raise ValueError(f"{name} has no hyperparameter(s) {unknown}; valid: {sorted(valid)}")
    if preset is not None:
        task = getattr(problem.operator, "task", None)
        hyperparameters = {**cls.preset_values(preset, task), **hyperparameters}
    return cls(**hyperparameters).solve(problem, prior, seed=seed)


__all__ = ["Problem", "Result", "evaluate", "operators", "paths", "priors", "solve", "solvers"]
__version__ = "0.1.0"
