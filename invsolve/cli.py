"""The ``invsolve`` command: ``demo``, ``list``, and entry points that later modules add (data, train,
evaluate, reconstruct)."""

from __future__ import annotations

import argparse
import importlib
import sys


def _cmd_list(args: argparse.Namespace) -> int:
    from invsolve import operators, priors, solvers

    for title, table in (("operators", operators.available()), ("priors", priors.available()),
                         ("solvers", solvers.available())):
        print(f"{title}:")
        for name, desc in table.items():
            print(f"  {name:<16} {desc}")
    print("presets (invsolve.solve(..., preset='NAME'); the task is the operator's name):")
    for name in solvers.available():
        for preset, table in solvers.get(name).presets.items():
            sources = sorted({p.source for p in table.values()})
            print(f"  {name:<10} {preset:<10} tasks: {', '.join(sorted(table))}")
            if args.verbose:
                for task, p in sorted(table.items()):
                    print(f"      {task:<16} {dict(p.values)}")
                print(f"      from {'; '.join(sources)}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from invsolve.demo import run_demo

    return run_demo(steps=args.steps, samples=args.samples, seed=args.seed, out=args.out,
                    image=not args.no_image)


def _delegate(module: str, argv: list[str]) -> int:
    """Forward to ``module.main(argv)`` (subcommands owned by other modules)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        print(f"invsolve: this command needs {module}, which is not installed ({err})", file=sys.stderr)
        return 2
    return int(mod.main(argv) or 0)


DELEGATED = {"data": "invsolve.data.cli", "train": "invsolve.train",
             "evaluate": "invsolve.evaluation.runner", "reconstruct": "invsolve.evaluation.reconstruct",
             "tune": "invsolve.evaluation.tune"}
HELP = {"evaluate": "run a data x operator x prior x solver grid from a YAML config (resumable)",
        "reconstruct": "reconstruct one image or measurement; prints PSNR/SSIM, time and NFE",
        "tune": "tune a solver's hyperparameters on a validation split (Optuna); writes a preset"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        return _delegate(DELEGATED[argv[0]], argv[1:])
    parser = argparse.ArgumentParser(prog="invsolve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="print the registered operators, priors, solvers and presets")
    p.add_argument("-v", "--verbose", action="store_true", help="show every preset's values and sources")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("demo", help="solve a problem with the shipped default prior and report the error")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="invsolve-demo", help="folder for the demo's figures")
    p.add_argument("--no-image", action="store_true", help="skip the image part (Gaussian mixture only)")
    p.set_defaults(func=_cmd_demo)
    for name in DELEGATED:
        sub.add_parser(name, help=HELP.get(name, f"see 'invsolve {name} --help'"))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
