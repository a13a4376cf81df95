"""``invsolve reconstruct``: solve one inverse problem from an image (simulated measurement) or from a
measured ``y`` (real data, no ground truth), write the reconstruction and a side-by-side figure.

    invsolve reconstruct --image photo.png --operator sr4 --noise 0.02 --prior natural-rgb \\
        --solver pigdm --out recon.png
    invsolve reconstruct --measurement y.pt --operator-config op.yaml --prior phantom-ct \\
        --solver dps --steps 200 --samples 8 --out recon.png      # posterior mean and std images

``op.yaml`` holds ``name``, ``noise_sigma``, ``kwargs`` and ``img_size`` (C, H, W) of the unknown (the
image's shape is used when ``--image`` is given). Prints PSNR / SSIM when the ground truth is known,
the wall time and the NFE. Outputs: ``--out`` (PNG clipped to the data range, or the raw tensors when it
ends in .pt), ``<stem>_std.png`` with ``--samples`` > 1 (the channel-mean posterior std, scaled to its maximum,
printed) and
``<stem>_figure.png`` (truth / A^+ y or A^T y / reconstruction / std).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import Field, ValidationError
from torch import Tensor

import invsolve
from invsolve import operators, priors

from .config import OperatorSpec
from .data import read_image
from .metrics import psnr_per_sample, ssim_per_sample
from .report import measurement_image


class OperatorFile(OperatorSpec):
    """``--operator-config`` YAML: an operator entry of an evaluation config plus the unknown's shape."""

    img_size: tuple[int, ...] | None = Field(None, min_length=1)


def parse_assignments(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["key=value", ...]`` to a dict, values parsed as YAML (numbers, booleans, lists, strings)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} expects key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def load_measurement(path: str | Path) -> Tensor:
    """A measurement tensor from a .pt (one tensor) or .npy file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"measurement file {path} does not exist")
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path))
    if path.suffix == ".pt":
        y = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(y, Tensor):
            raise ValueError(f"{path} holds a {type(y).__name__}; save the measurement as one tensor")
        return y
    raise ValueError(f"measurement file {path} must end in .pt or .npy")


def _operator_spec(args: argparse.Namespace) -> OperatorFile:
    if args.operator_config:
        if args.operator or args.noise is not None or args.op_arg:
            raise ValueError("give the operator either inline (--operator, --noise, --op-arg) or as "
                             "--operator-config, not both")
        path = Path(args.operator_config)
        if not path.is_file():
            raise ValueError(f"operator config {path} does not exist")
        try:
            return OperatorFile.model_validate(yaml.safe_load(path.read_text()))
        except ValidationError as err:
            raise ValueError(f"{path}: invalid operator config\n{err}") from err
    if not args.operator:
        raise ValueError("name the forward operator: --operator NAME (see `invsolve list`) or "
                         "--operator-config op.yaml")
    return OperatorFile(name=args.operator, noise_sigma=args.noise or 0.0,
                        kwargs=parse_assignments(args.op_arg, "--op-arg"))


def _save_png(img: Tensor, path: Path, data_range: tuple[float, float]) -> None:
    from PIL import Image

    lo, hi = data_range
    a = ((img.detach().double().cpu() - lo) / (hi - lo)).clamp(0, 1)
    if a.shape[0] not in (1, 3):
        a = a.norm(dim=0, keepdim=True).clamp(0, 1)
    arr = (a.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)


def _figure(panels: list[tuple[str, Tensor | None, tuple[float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import _display

    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
    for ax, (title, img, rng) in zip(axes[0], panels):
        _display(ax, None if img is None else img.cpu(), rng, title)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def reconstruct(args: argparse.Namespace) -> dict[str, Any]:
    """Run one reconstruction from parsed command-line arguments; returns what it printed as a dict
    (psnr, ssim when the ground truth is known; seconds, nfe; the written paths)."""
    if not args.image and not args.measurement:
        raise ValueError("give --image PHOTO (simulated measurement) or --measurement y.pt with "
                         "--operator-config op.yaml (measured data)")
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available here; use --device cpu")
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    rng = tuple(args.data_range)
    spec = _operator_spec(args)
    x_true = None
    if args.image:
        x_true = read_image(args.image, 1 if args.gray else 3)[None].to(device=device, dtype=dtype)
    img_size = tuple(spec.img_size) if spec.img_size else (None if x_true is None else
                                                           tuple(x_true.shape[1:]))
    if img_size is None:
        raise ValueError("the unknown's shape is not known: give img_size (C, H, W) in the operator config")
    kwargs = dict(spec.kwargs)
    if "size" not in kwargs and "img_size" not in kwargs:
        kwargs["img_size"] = img_size
    try:
        op = operators.build(spec.name, noise_sigma=spec.noise_sigma, **kwargs).to(device)
    except TypeError as err:
        raise ValueError(f"operator {spec.name} rejects its arguments {sorted(kwargs)} ({err})") from err
    if args.measurement:
        y = load_measurement(args.measurement).to(device)
        y = y.to(dtype) if not y.is_complex() else y
        with torch.no_grad():
            y_shape = tuple(op.A(torch.ones((1, *img_size), device=device, dtype=dtype)).shape[1:])
        if tuple(y.shape) == y_shape:
            y = y[None]
        problem = invsolve.Problem(op, y, x_true=x_true, x_shape=img_size)
    else:
        problem = invsolve.Problem.simulate(op, x_true, seed=args.seed)
    prior = priors.load(args.prior, **parse_assignments(args.prior_arg, "--prior-arg"))
    prior = prior.to(device=device, dtype=dtype).eval()
    hp = parse_assignments(args.hp, "--hp")
    if args.steps is not None:
        hp["steps"] = args.steps
    if args.preset is not None:
        hp["preset"] = args.preset
    start = time.perf_counter()
    res = invsolve.solve(problem.repeat(args.samples), prior, args.solver,
                         seed=list(range(args.seed, args.seed + args.samples)), **hp)
    seconds = time.perf_counter() - start
    mean = res.x.mean(0, keepdim=True)
    # posterior std, averaged over channels: one grey map of where the samples disagree
    std = res.x.std(0, keepdim=True).mean(1, keepdim=True) if args.samples > 1 else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"seconds": seconds, "nfe": res.nfe, "samples": args.samples}
    if x_true is not None:
        info["psnr"] = float(psnr_per_sample(mean, x_true, rng)[0])
        if x_true.ndim == 4:
            info["ssim"] = float(ssim_per_sample(mean, x_true, rng)[0])
    if out.suffix == ".pt":
        torch.save({"mean": mean[0].cpu(), "std": None if std is None else std[0].cpu(),
                    "samples": res.x.cpu()}, out)
    else:
        _save_png(mean[0], out, rng)
    info["out"] = str(out)
    if std is not None:
        smax = float(std.max())
        std_path = out.with_name(out.stem + "_std.png")
        _save_png(std[0] / max(smax, 1e-12), std_path, (0.0, 1.0))
        info.update(std_out=str(std_path), std_max=smax)
    m, kind = measurement_image(op, problem.y, img_size, rng)
    what = "posterior mean" if args.samples > 1 else "reconstruction"
    title = what + (f"\n{info['psnr']:.2f} dB" if "psnr" in info else "")
    panels = [("truth", None if x_true is None else x_true[0], rng),
              (f"{kind} (clipped)", None if m is None else m[0], rng), (title, mean[0], rng)]
    if std is not None:
        panels.append((f"posterior std (max {smax:.3g})", std[0], (0.0, smax)))
    fig_path = out.with_name(out.stem + "_figure.png")
    _figure(panels, fig_path)
    info["figure"] = str(fig_path)
    return info


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``invsolve reconstruct``."""
    ap = argparse.ArgumentParser(prog="invsolve reconstruct", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_argument_group("input")
    src.add_argument("--image", help="PNG/JPEG ground truth; the measurement is simulated from it")
    src.add_argument("--gray", action="store_true", help="read --image as one grey channel")
    src.add_argument("--measurement", help="measured y (.pt tensor or .npy), with --operator-config")
    src.add_argument("--operator-config", help="YAML: name, noise_sigma, kwargs, img_size (C, H, W)")
    src.add_argument("--operator", help="registered operator name (see `invsolve list`)")
    src.add_argument("--noise", type=float, default=None, help="Gaussian noise std of y (image units)")
    src.add_argument("--op-arg", action="append", metavar="KEY=VALUE", help="operator keyword (repeat)")
    ap.add_argument("--prior", required=True, help="registered prior name, e.g. natural-rgb")
    ap.add_argument("--prior-arg", action="append", metavar="KEY=VALUE",
                    help="prior keyword, e.g. path=ffhq_10m.pt (repeat)")
    ap.add_argument("--solver", required=True, help="registered solver name, e.g. pigdm")
    ap.add_argument("--steps", type=int, default=None, help="solver steps (default: the solver's)")
    ap.add_argument("--preset", default=None, help="solver preset (e.g. paper, or a tuned .json)")
    ap.add_argument("--hp", action="append", metavar="KEY=VALUE", help="solver hyperparameter (repeat)")
    ap.add_argument("--samples", type=int, default=1, help="posterior samples: > 1 writes mean and std")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--data-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LO", "HI"),
                    help="value range of the unknown (PSNR peak, PNG scaling); default 0 1")
    ap.add_argument("--out", required=True, help="reconstruction: .png (clipped) or .pt (raw tensors)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``invsolve reconstruct``."""
    args = build_parser().parse_args(argv)
    try:
        info = reconstruct(args)
    except ValueError as err:
        print(f"invsolve reconstruct: {err}", file=sys.stderr)
        return 2
    if "psnr" in info:
        ssim = f", SSIM {info['ssim']:.4f}" if "ssim" in info else ""
        print(f"PSNR {info['psnr']:.2f} dB{ssim}")
    print(f"time {info['seconds']:.2f} s, NFE {info['nfe']}, samples {info['samples']}")
    print(f"wrote {info['out']}" + (f", {info['std_out']} (std / {info['std_max']:.3g})"
                                     if "std_out" in info else "") + f", {info['figure']}")
    return 0
