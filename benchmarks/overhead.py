"""Solver overhead: wall time over the cost floor NFE x network call + operator calls x operator cost.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py                 # all solvers x 4 operators, CT CG, bf16
    OMP_NUM_THREADS=1 python benchmarks/overhead.py --solvers pigdm ot_ode --operators ct_sparse
    OMP_NUM_THREADS=1 python benchmarks/overhead.py --skip-cells    # only the CT and bf16 tables

1. Overhead per (solver, operator): every registered solver (but pinv) on random inpainting and
   Gaussian blur (natural-rgb prior, 3 x 32 x 32 crops of the held-out photo), sparse-view CT
   (phantom-ct, 64 x 64 Shepp-Logan) and MRI (phantom-ct, real 1 x 32 x 32), a few steps each.
   The network module and the operator are wrapped: every network call is counted with whether a
   backward pass ran through it (the VJP of gradient-guided solvers), every operator call by kind
   (A, A_adjoint, A_dagger, prox_l2, U, V, ...; with "+grad" when a backward runs through it; the
   conjugate-gradient iterations of non-decomposable operators count as their A / A_adjoint
   calls). Each kind is then timed alone on the recorded inputs. floor = sum of count x unit time;
   ratio = wall / floor (1 = no overhead at all; the target is <= 1.15). One warm-up solve, then
   ``--rounds`` rounds of (unit timings, solve, unit timings), so that load changes hit both sides.
2. CT: PiGDM and OT-ODE against DiffPIR at equal NFE on 64 x 64 phantoms, with the Gram solve
   as it was ("previous": CG on (r2 A A^T + s2 I) u = v in y-space from 0, tol 1e-6, 200
   iterations, then A^T u) and as it is (``linalg.NormalSolver``: CG on the normal equations,
   warm-started from the previous step, tol 1e-3, at most 50 iterations): time and PSNR,
   interleaved per image.
3. The network call in bf16 (autocast) against fp32 on this CPU, forward and forward + backward.

Writes benchmarks/results/overhead.json.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from deepinv.physics import DecomposablePhysics

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

import invsolve
from invsolve import operators, priors, solvers
from invsolve.priors.datasets import ellipse_phantoms, natural_rgb_images, shepp_logan
from invsolve.solvers import linalg

# --- instrumentation ---------------------------------------------------------------------------------

OP_KINDS = ("A", "A_adjoint", "A_dagger", "prox_l2", "A_A_adjoint", "A_adjoint_A", "U", "U_adjoint",
            "V", "V_adjoint")


def _needs_grad(args) -> bool:
    return torch.is_grad_enabled() and any(torch.is_tensor(a) and a.requires_grad for a in args)


def _detach(v: Any) -> Any:
    return v.detach().clone() if torch.is_tensor(v) else v


def _shape(args) -> tuple:
    return next((tuple(a.shape) for a in args if torch.is_tensor(a)), ())


class OpCounter:
    """Counts an operator's calls by (kind, input shape), outermost calls only; composite calls
    (A_A_adjoint, A_adjoint_A, and A_dagger / prox_l2 of non-decomposable operators, which iterate)
    are transparent so their inner A / A_adjoint calls count. Keeps one input per key for timing."""

    def __init__(self, op):
        self.op, self.depth = op, 0
        self.counts: dict[tuple, int] = defaultdict(int)
        self.examples: dict[tuple, tuple] = {}
        self.origs = {}
        iterative = not isinstance(op, DecomposablePhysics)
        for kind in OP_KINDS:
            if not hasattr(op, kind):
                continue
            orig = getattr(op, kind)
            self.origs[kind] = orig
            transparent = kind in ("A_A_adjoint", "A_adjoint_A") or (
                iterative and kind in ("A_dagger", "prox_l2"))
            setattr(op, kind, self._wrap(kind, orig, transparent))

    def _wrap(self, kind, orig, transparent):
        def call(*args, **kw):
            if transparent or self.depth:
                return orig(*args, **kw)
            grad = _needs_grad(args)
            key = (kind + ("+grad" if grad else ""), _shape(args))
            self.counts[key] += 1
            if key not in self.examples:
                self.examples[key] = (tuple(_detach(a) for a in args), {k: _detach(v) for k, v in kw.items()})
            self.depth += 1
            try:
                return orig(*args, **kw)
            finally:
                self.depth -= 1
        return call

    def reset(self) -> None:
        self.counts.clear()

    def unit_time(self, key) -> float:
        """Seconds of one call of ``key`` on its recorded input (with the backward for "+grad")."""
        kind, _ = key
        base = kind.removesuffix("+grad")
        args, kw = self.examples[key]
        fn = self.origs[base]
        self.depth += 1  # not counted
        try:
            if kind.endswith("+grad"):
                x = args[0].clone().requires_grad_(True)

                def run():
                    out = fn(x, *args[1:], **kw)
                    torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out))
                return C.timed(run)
            with torch.no_grad():
                return C.timed(lambda: fn(*args, **kw))
        finally:
            self.depth -= 1

    def remove(self) -> None:
        for kind in self.origs:
            delattr(self.op, kind)  # back to the class's method


class NetCounter:
    """Counts calls of the prior's network module by input shape, and the backward passes through
    its output (the VJPs); keeps one input per shape for timing."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.calls: dict[tuple, int] = defaultdict(int)
        self.backwards: dict[tuple, int] = defaultdict(int)
        self.examples: dict[tuple, tuple] = {}
        self.paused = False  # while timing units
        # counted when a call starts: a checkpointed recomputation (D-Flow) may stop inside the
        # network once it has what the backward pass needs, and then never reaches the forward hook
        self.handles = [module.register_forward_pre_hook(self._count),
                        module.register_forward_hook(self._hook)]

    def _count(self, module, args):
        if self.paused:
            return
        key = tuple(args[0].shape)
        self.calls[key] += 1
        if key not in self.examples:
            self.examples[key] = tuple(_detach(a) for a in args)

    def _hook(self, module, args, out):
        if self.paused:
            return
        key = tuple(args[0].shape)
        if torch.is_tensor(out) and out.requires_grad:
            out.register_hook(lambda g: self.backwards.__setitem__(key, self.backwards[key] + 1))

    def reset(self) -> None:
        self.calls.clear()
        self.backwards.clear()

    def unit_times(self, key, reps: int) -> list[tuple[float, float]]:
        """[(forward, forward + VJP to the input) seconds] on the recorded input, ``reps`` times each
        after one untimed call: back to back, as in a solver's loop (a forward right after a backward
        pays for re-allocating what the backward freed, which a steady loop does not)."""
        args = self.examples[key]
        self.paused = True
        with torch.no_grad():
            self.module(*args)
            fwd = [C.timed(lambda: self.module(*args)) for _ in range(reps)]
        x = args[0].clone().requires_grad_(True)

        def both():
            out = self.module(x, *args[1:])
            torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out))
        both()
        times = list(zip(fwd, [C.timed(both) for _ in range(reps)], strict=True))
        self.paused = False
        return times

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# --- the cells ----------------------------------------------------------------------------------------

SETTINGS: dict[str, dict[str, Any]] = {  # few steps; defaults otherwise
    "daps": {"steps": 4, "ode_steps": 3},
    "dflow": {"steps": 2, "ode_steps": 3},
    "mcgdiff": {"steps": 10, "particles": 4},
    "tds": {"steps": 10, "particles": 4},
}
OPERATORS = {  # name -> (prior, image size, kwargs)
    "inpaint_random": ("natural-rgb", (3, 32, 32), {"missing": 0.7}),
    "blur_gauss": ("natural-rgb", (3, 32, 32), {"kernel_size": 9, "std": 2.0}),
    "ct_sparse": ("phantom-ct", (1, 64, 64), {}),
    "mri": ("phantom-ct", (1, 32, 32), {}),
}
NOISE = 0.01


def truth(prior_name: str, size: tuple[int, ...]) -> torch.Tensor:
    if prior_name == "natural-rgb":
        photo = natural_rgb_images("test")[0][0]
        return photo[:, 100:100 + size[1], 200:200 + size[2]].unsqueeze(0).contiguous()
    return shepp_logan(size[1]).reshape(1, *size).float()


def floor_of(counts: tuple[dict, dict, dict], net_t: dict, op_t: dict) -> tuple[float, float]:
    """(network seconds, operator seconds) of the floor for ``counts`` = (network calls, backward
    passes through the network, operator calls)."""
    calls, backwards, op_calls = counts
    t_net = 0.0
    for key, n in calls.items():
        nb = backwards.get(key, 0)
        fwd, both = net_t[key]
        t_net += (n - nb) * fwd + nb * both
    t_op = sum(n * op_t[key] for key, n in op_calls.items())
    return t_net, t_op


def measure_units(net: NetCounter, ops: OpCounter, reps: int = 3) -> tuple[dict, dict]:
    net_t = {k: net.unit_times(k, reps) for k in list(net.examples)}
    op_t = {}
    for k in list(ops.examples):
        ops.unit_time(k)  # untimed first call
        op_t[k] = [ops.unit_time(k) for _ in range(reps)]
    return net_t, op_t


def merge(*many: tuple[dict, dict]) -> tuple[dict, dict]:
    """Medians over several unit-timing passes."""
    net_keys = set().union(*(m[0] for m in many))
    op_keys = set().union(*(m[1] for m in many))
    net_t = {k: tuple(statistics.median(v[i] for m in many for v in m[0].get(k, [])) for i in (0, 1))
             for k in net_keys}
    op_t = {k: statistics.median(v for m in many for v in m[1].get(k, [])) for k in op_keys}
    return net_t, op_t


def run_cell(name: str, op_name: str, prior, x: torch.Tensor, rounds: int) -> dict:
    _, size, kw = OPERATORS[op_name]
    op = operators.build(op_name, img_size=size, noise_sigma=NOISE, **kw)
    problem = invsolve.Problem.simulate(op, x, seed=0)
    hp = SETTINGS.get(name, {"steps": 10})
    solver = solvers.get(name)(**hp)
    ops, net = OpCounter(op), NetCounter(prior.module)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                solver.solve(problem, prior, seed=0)  # warm-up; records the inputs to time
            except ValueError as err:  # the solver does not handle this operator: say so
                return {"solver": name, "operator": op_name, "error": str(err).split(";")[0]}
            out = []
            for _ in range(rounds):
                before = measure_units(net, ops)
                ops.reset()
                net.reset()
                start = time.perf_counter()
                res = solver.solve(problem, prior, seed=0)
                wall = time.perf_counter() - start
                counts = (dict(net.calls), dict(net.backwards), dict(ops.counts))
                after = measure_units(net, ops)
                net_t, op_t = merge(before, after)
                t_net, t_op = floor_of(counts, net_t, op_t)
                out.append({"wall": wall, "floor_net": t_net, "floor_op": t_op,
                            "ratio": wall / (t_net + t_op), "nfe": res.nfe,
                            "psnr": float(C.psnr(res.x, x).mean())})
    finally:
        ops.remove()
        net.remove()
    calls, backs, op_counts = counts
    fwd_t = {str(k): v for k, v in net_t.items()}
    return {"solver": name, "operator": op_name, "hp": hp, "rounds": out,
            "ratio": statistics.median(r["ratio"] for r in out),
            "wall": statistics.median(r["wall"] for r in out),
            "floor_net": statistics.median(r["floor_net"] for r in out),
            "floor_op": statistics.median(r["floor_op"] for r in out),
            "nfe": out[-1]["nfe"], "net_calls": sum(calls.values()), "net_backward": sum(backs.values()),
            "op_calls": {f"{k[0]}{list(k[1])}": v for k, v in op_counts.items()},
            "unit_net": fwd_t, "unit_op": {f"{k[0]}{list(k[1])}": v for k, v in op_t.items()},
            "psnr": out[-1]["psnr"]}


def op_summary(op_calls: dict[str, int]) -> str:
    agg: dict[str, int] = defaultdict(int)
    for k, v in op_calls.items():
        agg[k.split("[")[0]] += v
    short = {"A_adjoint": "At", "A_dagger": "A+", "U_adjoint": "Ut", "V_adjoint": "Vt"}
    return " ".join(f"{short.get(k.removesuffix('+grad'), k.removesuffix('+grad'))}"
                    f"{'*' if k.endswith('+grad') else ''}:{v}" for k, v in sorted(agg.items()))


# --- CT: the Gram solve before and after ------------------------------------------------------------

@contextlib.contextmanager
def previous_gram_solve():
    """The Gram solve as it was before ``NormalSolver``: y-space CG from 0 (tol 1e-6, 200
    iterations), then A^T; decomposable operators in closed form as always."""
    orig = linalg.NormalSolver.__call__

    def legacy(self, v, r2, s2):
        return linalg.adjoint_gram_solve(self.operator, v, r2, s2, floor=self.floor)
    linalg.NormalSolver.__call__ = legacy
    try:
        yield
    finally:
        linalg.NormalSolver.__call__ = orig


def ct_table(steps: int, n_images: int, seed: int = 0) -> list[dict]:
    prior = priors.load("phantom-ct")
    imgs = [shepp_logan(64).reshape(1, 1, 64, 64).float()]
    imgs += list(ellipse_phantoms(max(n_images - 1, 0), 64, seed=102).float().split(1))
    variants = [("diffpir", "default", {}), ("pigdm", "previous", {}), ("pigdm", "default", {}),
                ("ot_ode", "previous", {}), ("ot_ode", "default", {})]
    rows = []
    for i, x in enumerate(imgs[:n_images]):
        op = operators.build("ct_sparse", img_size=(1, 64, 64), noise_sigma=NOISE)
        problem = invsolve.Problem.simulate(op, x, seed=seed + i)
        ops = OpCounter(op)
        for name, mode, hp in variants:
            ops.reset()
            ctx = previous_gram_solve() if mode == "previous" else contextlib.nullcontext()
            with ctx, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                res = invsolve.solve(problem, prior, name, steps=steps, seed=seed + i, **hp)
                wall = time.perf_counter() - start
            n_a = sum(v for k, v in ops.counts.items() if k[0].startswith("A"))
            rows.append({"image": i, "solver": name, "gram": mode, "seconds": wall, "nfe": res.nfe,
                         "op_calls": n_a, "psnr": float(C.psnr(res.x, x).mean())})
            print(f"  image {i} {name:8s} {mode:9s} {wall:7.1f} s  NFE {res.nfe}  A/At calls {n_a:5d}  "
                  f"PSNR {rows[-1]['psnr']:.2f}", flush=True)
        ops.remove()
    return rows


# --- bf16 ------------------------------------------------------------------------------------------

def bf16_table(reps: int) -> list[dict]:
    rows = []
    for name, shape in (("natural-rgb", (1, 3, 32, 32)), ("natural-rgb", (4, 3, 32, 32)),
                        ("natural-rgb", (1, 3, 64, 64)), ("phantom-ct", (1, 1, 64, 64))):
        prior = priors.load(name)
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        sig = torch.full((shape[0],), 0.2)

        def fwd(prior=prior, x=x, sig=sig):
            with torch.no_grad():
                prior.denoise(x, sig)

        def both(prior=prior, x=x, sig=sig):
            xg = x.clone().requires_grad_(True)
            d = prior.denoise(xg, sig)
            torch.autograd.grad(d, xg, grad_outputs=torch.ones_like(d))

        times: dict[tuple[str, str], list[float]] = defaultdict(list)
        for prec in (None, "bf16"):  # warm-up
            prior.set_precision(prec)
            fwd()
            both()
        for _ in range(reps):  # interleaved
            for prec in (None, "bf16"):
                prior.set_precision(prec)
                times[(str(prec), "fwd")].append(C.timed(fwd))
                times[(str(prec), "both")].append(C.timed(both))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"prior": name, "shape": list(shape),
                     "fp32_fwd_ms": 1e3 * med[("None", "fwd")], "bf16_fwd_ms": 1e3 * med[("bf16", "fwd")],
                     "fp32_fwdbwd_ms": 1e3 * med[("None", "both")],
                     "bf16_fwdbwd_ms": 1e3 * med[("bf16", "both")],
                     "speedup_fwd": med[("None", "fwd")] / med[("bf16", "fwd")],
                     "speedup_fwdbwd": med[("None", "both")] / med[("bf16", "both")]})
        prior.set_precision(None)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = sorted(solvers.available(baselines=False))
    ap.add_argument("--solvers", nargs="+", default=names)
    ap.add_argument("--operators", nargs="+", default=list(OPERATORS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ct-steps", type=int, default=20)
    ap.add_argument("--ct-images", type=int, default=3)
    ap.add_argument("--bf16-reps", type=int, default=5)
    ap.add_argument("--skip-cells", action="store_true")
    ap.add_argument("--skip-ct", action="store_true")
    ap.add_argument("--skip-bf16", action="store_true")
    ap.add_argument("--out", default="overhead")
    args = ap.parse_args(argv)
    info = C.machine(args.threads)
    print(C.describe(info), "\n", flush=True)
    payload: dict[str, Any] = {"settings": {"steps": SETTINGS, "default_steps": 10, "operators": {
        k: {"prior": v[0], "size": v[1], "kwargs": v[2], "noise_sigma": NOISE} for k, v in OPERATORS.items()},
        "rounds": args.rounds}}
    if not args.skip_cells:
        cells = []
        loaded = {}
        for op_name in args.operators:
            prior_name, size, _ = OPERATORS[op_name]
            prior = loaded.setdefault(prior_name, priors.load(prior_name))
            x = truth(prior_name, size)
            for name in args.solvers:
                cell = run_cell(name, op_name, prior, x, args.rounds)
                cells.append(cell)
                if "error" in cell:
                    print(f"  {op_name:14s} {name:9s} n/a: {cell['error']}", flush=True)
                else:
                    print(f"  {op_name:14s} {name:9s} ratio {cell['ratio']:.3f}  wall {cell['wall']:.2f} s  "
                          f"net {cell['floor_net']:.2f} s  op {cell['floor_op']:.3f} s", flush=True)
        payload["cells"] = cells
        rows = [[c["solver"], c["operator"], c["nfe"], f"{c['net_calls']}/{c['net_backward']}",
                 op_summary(c["op_calls"]), c["wall"], c["floor_net"], c["floor_op"], c["ratio"]]
                for c in cells if "error" not in c]
        print("\nOverhead: wall / (network calls x unit + operator calls x unit); "
              "net calls = forward calls / backward passes through the network; op calls: * = with backward\n")
        print(C.table(["solver", "operator", "NFE", "net calls", "op calls", "wall (s)", "net floor (s)",
                       "op floor (s)", "ratio"], rows))
        over = [c for c in cells if "error" not in c and c["ratio"] > 1.15]
        print(f"\n{len(over)} of {len(rows)} cells above 1.15"
              + (": " + ", ".join(f"{c['solver']}/{c['operator']} {c['ratio']:.2f}" for c in over) if over else ""))
        na = [c for c in cells if "error" in c]
        if na:
            print("not applicable: " + "; ".join(f"{c['solver']}/{c['operator']}" for c in na))
    if not args.skip_ct:
        print(f"\nCT (ct_sparse 64 x 64, sigma_y {NOISE}, phantom-ct), {args.ct_steps} steps, equal NFE:\n")
        rows = ct_table(args.ct_steps, args.ct_images)
        payload["ct"] = rows
        summary = []
        for name, mode in (("diffpir", "default"), ("pigdm", "previous"), ("pigdm", "default"),
                           ("ot_ode", "previous"), ("ot_ode", "default")):
            sel = [r for r in rows if r["solver"] == name and r["gram"] == mode]
            ref = [r for r in rows if r["solver"] == "diffpir"]
            t = statistics.mean(r["seconds"] for r in sel)
            summary.append([name, mode, sel[0]["nfe"], statistics.mean(r["op_calls"] for r in sel), t,
                            t / statistics.mean(r["seconds"] for r in ref),
                            statistics.mean(r["psnr"] for r in sel)])
        payload["ct_summary"] = summary
        print()
        print(C.table(["solver", "Gram solve", "NFE", "A/At calls", "seconds", "x diffpir", "PSNR (dB)"],
                      summary))
    if not args.skip_bf16:
        rows = payload["bf16"] = bf16_table(args.bf16_reps)
        print("\nNetwork call (prior.denoise), bf16 autocast vs fp32, medians of interleaved repeats:\n")
        print(C.table(["prior", "input", "fp32 fwd (ms)", "bf16 fwd (ms)", "fwd speed-up",
                       "fp32 fwd+bwd (ms)", "bf16 fwd+bwd (ms)", "fwd+bwd speed-up"],
                      [[r["prior"], "x".join(map(str, r["shape"])), r["fp32_fwd_ms"], r["bf16_fwd_ms"],
                        r["speedup_fwd"], r["fp32_fwdbwd_ms"], r["bf16_fwdbwd_ms"], r["speedup_fwdbwd"]]
                       for r in rows]))
    out = C.write(args.out, info, payload)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
