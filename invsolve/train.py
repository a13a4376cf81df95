"""Train a prior: EDM denoising score matching or conditional flow matching, resumable.

``invsolve train --data natural-rgb --out runs/natural-rgb --steps 4000`` (or ``train(TrainConfig(...))``)
trains the project's ``UNet`` on random crops (flips, 90-degree rotations) and writes to ``--out``:

- ``ckpt.pt`` every ``ckpt_every`` steps: weights, EMA weights, optimizer, step, losses, validation
  losses, training wall time and every RNG state, so a resumed run (same ``--out``, larger
  ``--steps``) reproduces an uninterrupted one exactly;
- ``model.pt`` (the EMA weights) and ``prior.json`` (architecture, path, parameterisation, data range,
  units, data set and split, steps, wall time, the last validation loss, the exact command),
  loadable with ``invsolve.priors.unet.load_prior``;
- ``loss.png``: the training loss (raw and smoothed) and the validation loss at each checkpoint.

``--data`` is a built-in set (natural-rgb, phantom-ct, darcy; their own splits and units), a folder of
images (PNG, JPEG, TIFF, BMP, grey or RGB; DICOM with pydicom) read into [0, 1], or a tensor file
(.npy, .npz, .pt) of shape (N, C, H, W) or (N, H, W), in [0, 1] unless ``--units LO HI`` says otherwise
(the prior then acts in those units). Whole files / items are held out for validation
(``--val-fraction``); see ``invsolve.priors.datasets.user_data``.

Validation: at each checkpoint the EMA model's loss (the training objective: EDM-weighted denoising
or flow matching) on ``VAL_CROPS`` fixed crops of the held-out images at fixed noise levels
(``val_levels``), all drawn once from a generator of their own, never from the training one.

Objectives:
- ``edm``: Karras et al. 2022 (arXiv 2206.00364), Sec. 5 and Table 1: ln(sigma) ~ N(P_mean, P_std^2),
  D = c_skip x + c_out F(c_in x, c_noise), loss lambda(sigma) |D(x0 + sigma n) - x0|^2 with
  lambda = (sigma^2 + sd^2) / (sigma sd)^2.
- ``flow``: conditional flow matching on the linear path x_t = (1 - t) x0 + t n, target velocity
  n - x0, t ~ U(0, 1) (Lipman et al. 2023, arXiv 2210.02747; Liu et al. 2023, arXiv 2209.03003).

All randomness (crops, sigmas, noise) comes from one CPU ``torch.Generator`` whose state is saved.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# Fields that may change between a run and its resumption without changing the result ("out": a run
# folder copied elsewhere, e.g. a committed checkpoint, resumes from its new place).
_RESUMABLE = {"steps", "progress", "threads", "ckpt_every", "command", "out"}
# What a checkpoint written before a field existed did, where that differs from the field's default.
_BEFORE = {"scale_weights": "positions"}

VAL_CROPS = 64
"""Number of fixed validation crops (of the run's crop size)."""
VAL_SEED = 0
"""Seed of the validation generator (crops and noise), separate from the training generator."""
VAL_EDM_Z = (-1.5, -0.5, 0.5, 1.5)
"""EDM validation levels: sigma = exp(p_mean + p_std z), spanning the training distribution."""
VAL_FLOW_T = (0.125, 0.375, 0.625, 0.875)
"""Flow validation times t (data at t = 0)."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in the checkpoint and in prior.json)."""

    data: str = "natural-rgb"  # a built-in set, a folder of images or a tensor file
    val_fraction: float = 0.1  # your own data: share of files / items held out (built-ins: own split)
    units: tuple[float, float] | None = None  # tensor files: (lo, hi) of their values; None is (0, 1)
    dicom_window: tuple[float, float] | None = None  # DICOM: (lo, hi) modality units; None: min/max
    out: str = "train_runs/natural-rgb"
    objective: str = "edm"  # "edm" or "flow"
    steps: int = 4000
    batch: int = 16
    crop: int = 32
    channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention: bool = False
    scales: tuple[float, ...] = (1.0,)
    scale_weights: str = "equal"  # "equal": each scale drawn alike; "positions": each crop position
    lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    ckpt_every: int = 500
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 0.5
    data_range: tuple[float, float] = (-1.0, 1.0)
    threads: int | None = None
    progress: bool = True
    command: str = field(default="")


def _build(cfg: TrainConfig, channels: int):
    from invsolve.priors.unet import EDMPrecond, UNet

    net = UNet(in_channels=channels, channels=cfg.channels, channel_mult=tuple(cfg.channel_mult),
               num_res_blocks=cfg.num_res_blocks, attention=cfg.attention)
    return net, (EDMPrecond(net, cfg.sigma_data) if cfg.objective == "edm" else None)


def _loss(cfg: TrainConfig, net, precond, x0: Tensor, gen: torch.Generator) -> Tensor:
    B = x0.shape[0]
    noise = torch.randn(x0.shape, generator=gen).to(x0)
    if cfg.objective == "edm":
        ln_sigma = torch.randn(B, generator=gen, dtype=torch.float64) * cfg.p_std + cfg.p_mean
        sigma = ln_sigma.exp().to(x0)
        s = sigma[:, None, None, None]
        weight = (s**2 + cfg.sigma_data**2) / (s * cfg.sigma_data) ** 2
        denoised = precond(x0 + s * noise, sigma)
        return (weight * (denoised - x0) ** 2).mean()
    t = torch.rand(B, generator=gen, dtype=torch.float64).to(x0)
    tt = t[:, None, None, None]
    x_t = (1 - tt) * x0 + tt * noise
    return ((net(x_t, t) - (noise - x0)) ** 2).mean()


def _to_net_units(cfg: TrainConfig, x: Tensor) -> Tensor:
    lo, hi = cfg.data_range
    return lo + (hi - lo) * x


def prior_info(cfg: TrainConfig, net, data_info: dict, step: int, train_seconds: float | None = None,
               validation: dict | None = None, timed_from_step: int = 0) -> dict:
    """The prior.json dictionary of a run at ``step``.

    ``train_seconds``: cumulative training wall time (s) over all resumptions, counted from step
    ``timed_from_step`` (0, unless the run resumed a checkpoint written before time was recorded);
    ``validation``: the last entry of the validation history (see ``validation_loss``).
    """
    timing = {} if train_seconds is None else {"train_seconds": round(train_seconds, 1)}
    if timing and timed_from_step:
        timing["train_seconds_from_step"] = timed_from_step
    return {
        "architecture": {"class": "invsolve.priors.unet.UNet", "kwargs": net.config,
                         "parameters": sum(p.numel() for p in net.parameters())},
        "objective": cfg.objective,
        "precond": "EDM (Karras et al. 2022, Table 1)" if cfg.objective == "edm" else None,
        "sigma_data": cfg.sigma_data,
        "path": "ve" if cfg.objective == "edm" else "flow (data at t=0)",
        "parameterization": "x0 (EDM-preconditioned denoiser D(x, sigma))" if cfg.objective == "edm"
        else "velocity u = noise - x0, conditioned on t",
        "data_range": list(cfg.data_range),
        "units": [0.0, 1.0],
        **data_info,
        "crop": cfg.crop,
        "batch": cfg.batch,
        "steps": step,
        **timing,
        **({"validation": validation} if validation else {}),
        "weights": f"EMA, decay {cfg.ema_decay:g}",
        "seed": cfg.seed,
        "command": cfg.command,
        "reproduce": reproduce_command(cfg, step),
        "config": dataclasses.asdict(cfg),
    }


def reproduce_command(cfg: TrainConfig, steps: int) -> str:
    """The full ``invsolve train`` command that reproduces the run's state at ``steps``.

    Resuming is exact and no schedule depends on the total step count, so stopping a run at a
    checkpoint gives the same weights as a run with ``--steps`` set to that checkpoint's step.
    """
    args = ["--data", cfg.data, "--out", cfg.out, "--objective", cfg.objective, "--steps", steps,
            "--batch", cfg.batch, "--crop", cfg.crop, "--channels", cfg.channels,
            "--channel-mult", *cfg.channel_mult, "--num-res-blocks", cfg.num_res_blocks,
            *(["--attention"] if cfg.attention else []), "--scales", *cfg.scales,
            *(["--scale-weights", cfg.scale_weights] if len(cfg.scales) > 1 else []),
            "--lr", cfg.lr, "--warmup", cfg.warmup, "--ema-decay", cfg.ema_decay,
            "--seed", cfg.seed, "--p-mean", cfg.p_mean, "--p-std", cfg.p_std,
            "--sigma-data", cfg.sigma_data, "--device", cfg.device, "--dtype", cfg.dtype]
    if not _builtin(cfg.data):
        args += ["--val-fraction", cfg.val_fraction]
    for flag, value in (("--units", cfg.units), ("--dicom-window", cfg.dicom_window)):
        args += [flag, *value] if value is not None else []
    return "invsolve train " + shlex.join(str(a) for a in args)


def _builtin(data: str) -> bool:
    from invsolve.priors.datasets import DATASETS

    return data in DATASETS


def val_levels(cfg: TrainConfig) -> list[float]:
    """The validation noise levels: EDM sigmas (network units) or flow times t."""
    if cfg.objective == "edm":
        return [float(torch.tensor(cfg.p_mean + cfg.p_std * z, dtype=torch.float64).exp())
                for z in VAL_EDM_Z]
    return list(VAL_FLOW_T)


def validation_set(cfg: TrainConfig, images: list[Tensor]) -> dict | None:
    """Fixed validation crops (``VAL_CROPS``, network units) and one fixed noise draw per level,
    from a generator seeded with ``VAL_SEED``; None without validation images."""
    from invsolve.priors.datasets import PatchSampler

    large = [im for im in images if min(im.shape[-2:]) >= cfg.crop]
    if len(large) < len(images):
        warnings.warn(f"{len(images) - len(large)} validation image(s) are smaller than the crop "
                      f"{cfg.crop}; validating on the other {len(large)}", stacklevel=2)
    if not large:
        return None
    images = large
    gen = torch.Generator().manual_seed(VAL_SEED)
    x0 = _to_net_units(cfg, PatchSampler(images, cfg.crop).sample(VAL_CROPS, gen))
    levels = val_levels(cfg)
    return {"x0": x0, "noise": [torch.randn(x0.shape, generator=gen) for _ in levels],
            "levels": levels}


@torch.no_grad()
def validation_loss(cfg: TrainConfig, model, val: dict, batch: int = 16) -> list[float]:
    """The loss at each validation level, averaged over the fixed crops (float64 sums).

    EDM: lambda(sigma) |D(x0 + sigma n) - x0|^2 with ``model`` the preconditioned denoiser D;
    flow: |v(x_t, t) - (n - x0)|^2 with ``model`` the velocity network. The training objective at
    fixed levels, so its mean is comparable to the training loss.
    """
    p = next(model.parameters())
    out = []
    for level, noise in zip(val["levels"], val["noise"]):
        total = 0.0
        for i in range(0, len(val["x0"]), batch):
            x0 = val["x0"][i:i + batch].to(p)
            n = noise[i:i + batch].to(p)
            lv = torch.full((len(x0),), level, dtype=p.dtype, device=p.device)
            if cfg.objective == "edm":
                w = (level**2 + cfg.sigma_data**2) / (level * cfg.sigma_data) ** 2
                err = w * (model(x0 + level * n, lv) - x0) ** 2
            else:
                err = (model((1 - level) * x0 + level * n, lv) - (n - x0)) ** 2
            total += float(err.double().mean(dim=(1, 2, 3)).sum())
        out.append(total / len(val["x0"]))
    return out


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 \
        else f"{seconds / 3600:.1f} h"


def _smooth(values: list[float], width: int) -> np.ndarray:
    """Trailing moving average (shorter at the start)."""
    c = np.cumsum(np.concatenate([[0.0], np.asarray(values, dtype=np.float64)]))
    i = np.arange(1, len(values) + 1)
    return (c[i] - c[np.maximum(i - width, 0)]) / np.minimum(i, width)


def plot_losses(path: str | Path, losses: list[float], val_history: list[dict], title: str = ""
                ) -> None:
    """Write the loss curves to ``path`` (PNG): training loss per step (raw, and a moving average
    over ~2 % of the steps) with the validation loss at each checkpoint, and the validation loss
    per noise level. Uses matplotlib's Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax, ax_val = fig.subplots(1, 2)
    steps = np.arange(1, len(losses) + 1)
    width = max(1, len(losses) // 50)
    if losses:
        ax.plot(steps, losses, color="0.8", lw=0.5, label="training (per batch)")
        ax.plot(steps, _smooth(losses, width), color="C0", label=f"training ({width}-step mean)")
    if val_history:
        ax.plot([h["step"] for h in val_history], [h["loss"] for h in val_history], "o-",
                color="C3", ms=3, label="validation (EMA weights)")
        for j, level in enumerate(val_history[-1]["levels"]):
            ax_val.plot([h["step"] for h in val_history], [h["per_level"][j] for h in val_history],
                        "o-", ms=3, label=f"{val_history[-1]['level_name']} = {level:.3g}")
        ax_val.legend(fontsize=8)
    else:
        ax_val.text(0.5, 0.5, "no validation images", ha="center", va="center",
                    transform=ax_val.transAxes)
    for a, name in ((ax, "loss"), (ax_val, "validation loss per level")):
        a.set_xlabel("step")
        a.set_ylabel(name)
        if any(line.get_ydata().size for line in a.get_lines()):
            a.set_yscale("log")
        a.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def _save(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # atomic: a run killed mid-write keeps the previous checkpoint


def train(cfg: TrainConfig | None = None, **overrides) -> dict:
    """Train (or resume) the run ``cfg.out``; returns ``{"step", "losses", "net", "ema", "out"}``.

    ``overrides`` replace fields of ``cfg``. With ``cfg.threads`` set, torch uses that many threads
    during training (restored afterwards).
    """
    cfg = dataclasses.replace(cfg or TrainConfig(), **overrides)
    if cfg.objective not in ("edm", "flow"):
        raise ValueError(f"objective must be 'edm' or 'flow', got {cfg.objective!r}")
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig) -> dict:
    from tqdm.auto import tqdm

    from invsolve.priors.datasets import training_set

    device, dtype = torch.device(cfg.device), getattr(torch, cfg.dtype)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    sampler, data_info, val_images = training_set(
        cfg.data, cfg.crop, seed=cfg.seed, scales=tuple(cfg.scales), val_fraction=cfg.val_fraction,
        units=None if cfg.units is None else tuple(cfg.units),
        dicom_window=None if cfg.dicom_window is None else tuple(cfg.dicom_window))
    if cfg.scale_weights not in ("equal", "positions"):
        raise ValueError(f"scale_weights must be 'equal' or 'positions', got {cfg.scale_weights!r}")
    if cfg.scale_weights == "equal" and len(cfg.scales) > 1:
        sampler.equal_groups(len(cfg.scales))
    val = validation_set(cfg, val_images)  # its own generator: the training stream is untouched
    torch.manual_seed(cfg.seed)  # initial weights
    net, precond = _build(cfg, sampler.channels)
    net.to(device=device, dtype=dtype)
    ema = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    step, losses = 0, []
    val_history: list[dict] = []
    seconds, timed_from = 0.0, 0  # training wall time before this session, counted from step timed_from

    ckpt_path = out / "ckpt.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        # fields added after a checkpoint was written count as what the code did then
        saved = {**dataclasses.asdict(TrainConfig()), **_BEFORE, **ck["config"]}
        ignore = set(_RESUMABLE) | ({"scale_weights"} if len(cfg.scales) == 1 else set())  # no effect
        saved = {k: v for k, v in saved.items() if k not in ignore}
        now = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ignore}
        if json.loads(json.dumps(saved)) != json.loads(json.dumps(now)):
            diff = {k: (saved.get(k), now.get(k)) for k in now if saved.get(k) != now.get(k)}
            raise ValueError(f"{ckpt_path} was trained with a different configuration: {diff}; "
                             "use a new --out or the same settings")
        if ck.get("data_sha1", data_info.get("data_sha1")) != data_info.get("data_sha1"):
            raise ValueError(f"the data at {cfg.data} changed since {ckpt_path} was written (files "
                             "added, removed or edited); restore it or train into a new --out")
        net.load_state_dict(ck["net"])
        for e, v in zip(ema, ck["ema"]):
            e.copy_(v)
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        torch.set_rng_state(ck["torch_rng"])
        if device.type == "cuda" and ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"], device)
        step, losses = ck["step"], list(ck["losses"])
        val_history = list(ck.get("val_history", []))
        if "train_seconds" in ck:
            seconds, timed_from = ck["train_seconds"], ck.get("timed_from_step", 0)
        else:  # a checkpoint from before wall time was recorded
            timed_from = step

    ema_model = None  # a copy of the network (with EDM preconditioning) that holds the EMA weights

    def validate() -> None:
        nonlocal ema_model
        if val is None:
            return
        if ema_model is None:
            ema_model = copy.deepcopy(precond if precond is not None else net).eval()
            ema_model.requires_grad_(False)
        ema_net = ema_model.net if precond is not None else ema_model
        with torch.no_grad():
            for q, e in zip(ema_net.parameters(), ema):
                q.copy_(e)
        per_level = validation_loss(cfg, ema_model, val, batch=cfg.batch)
        entry = {"step": step, "loss": sum(per_level) / len(per_level), "per_level": per_level,
                 "levels": val["levels"], "level_name": "sigma" if cfg.objective == "edm" else "t"}
        if val_history and val_history[-1]["step"] == step:
            val_history.pop()
        val_history.append(entry)

    def checkpoint() -> None:
        validate()
        total = seconds + time.time() - t0
        _save(ckpt_path, {
            "net": net.state_dict(), "ema": ema, "opt": opt.state_dict(), "gen": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "step": step, "losses": losses, "config": dataclasses.asdict(cfg),
            "val_history": val_history, "train_seconds": total, "timed_from_step": timed_from,
            "data_sha1": data_info.get("data_sha1"),
        })
        ema_sd = {k: v for k, v in net.state_dict().items()}
        for (k, _), e in zip(net.named_parameters(), ema):
            ema_sd[k] = e
        _save(out / "model.pt", {k: v.detach().to("cpu", torch.float32).clone() for k, v in ema_sd.items()})
        info = prior_info(cfg, net, data_info, step, train_seconds=total,
                          validation=val_history[-1] if val_history else None,
                          timed_from_step=timed_from)
        (out / "prior.json").write_text(json.dumps(info, indent=1))
        plot_losses(out / "loss.png", losses, val_history,
                    title=f"{cfg.data}: {cfg.objective}, step {step}, {_duration(total)} of training")

    net.train()
    bar = tqdm(total=cfg.steps, initial=step, disable=not cfg.progress, desc=f"train {cfg.data}")
    t0 = time.time()
    while step < cfg.steps:
        x0 = _to_net_units(cfg, sampler.sample(cfg.batch, gen)).to(device=device, dtype=dtype)
        loss = _loss(cfg, net, precond, x0, gen)
        for g in opt.param_groups:  # linear warm-up, a function of the step only (resumable)
            g["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, net.parameters()):
                e.lerp_(p.detach(), 1 - decay)
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            checkpoint()
    bar.close()
    if not ckpt_path.exists():
        checkpoint()
    return {"step": step, "losses": losses, "net": net, "ema": ema, "out": out,
            "seconds": time.time() - t0, "train_seconds": seconds + time.time() - t0,
            "val_history": val_history}


_EPILOG = """examples:
  invsolve train --data my_photos/ --out runs/mine --steps 20000      # a folder of images
  invsolve train --data fields.npy --units 3 12 --crop 64 --out runs/fields   # values in [3, 12]
  invsolve train --data natural-rgb --out runs/natural-rgb --steps 8000     # resume: same --out
then: invsolve.priors.load_prior("runs/mine"). Watch runs/mine/loss.png while it trains."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="invsolve train", description=__doc__.split("\n\n")[0],
                                epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig()
    p.add_argument("--data", default=d.data, metavar="NAME|FOLDER|FILE",
                   help="a built-in set (natural-rgb, phantom-ct, darcy), a folder of images "
                        "(png/jpg/tif/bmp, grey or RGB, searched recursively; .dcm with pydicom), "
                        "or a tensor file (.npy/.npz/.pt; FILE:KEY picks one array) of shape "
                        "(N, C, H, W) or (N, H, W)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="your own data: share of whole files / items held out for validation "
                        "(at least one when there are two; split fixed by --seed; default %(default)s)")
    p.add_argument("--units", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="tensor files: the range of their values (default 0 1); the prior acts in "
                        "these units")
    p.add_argument("--dicom-window", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="DICOM files: map this range of modality values (e.g. -1000 1000 HU) to "
                        "[0, 1], clipped (default: each file's own min and max)")
    p.add_argument("--out", default=None,
                   help="run folder (ckpt.pt, model.pt, prior.json, loss.png); default "
                        "train_runs/<data name>. The same --out with more --steps resumes exactly")
    p.add_argument("--objective", default=d.objective, choices=["edm", "flow"])
    for name in ("steps", "batch", "crop", "channels", "num_res_blocks", "warmup", "ckpt_every",
                 "seed", "threads"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("lr", "ema_decay", "p_mean", "p_std", "sigma_data"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--channel-mult", type=int, nargs="+", default=list(d.channel_mult))
    p.add_argument("--attention", action="store_true", help="self-attention at the lowest resolution")
    p.add_argument("--scales", type=float, nargs="+", default=list(d.scales),
                   help="magnifications the photos are cropped at, e.g. 1 0.5")
    p.add_argument("--scale-weights", default=d.scale_weights, choices=["equal", "positions"],
                   help="with several --scales: draw each scale equally often (default), or each crop "
                        "position (runs started before this option; small scales then rarely come up)")
    p.add_argument("--device", default=d.device)
    p.add_argument("--dtype", default=d.dtype)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``invsolve train``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    a = _parser().parse_args(argv)
    name = a.data if _builtin(a.data) else Path(a.data.rstrip("/\\")).stem
    cfg = TrainConfig(
        data=a.data, out=a.out or f"train_runs/{name}", objective=a.objective, steps=a.steps,
        batch=a.batch, crop=a.crop, channels=a.channels, channel_mult=tuple(a.channel_mult),
        num_res_blocks=a.num_res_blocks, attention=a.attention, scales=tuple(a.scales),
        scale_weights=a.scale_weights, lr=a.lr,
        warmup=a.warmup, ema_decay=a.ema_decay,
        ckpt_every=a.ckpt_every, seed=a.seed, device=a.device, dtype=a.dtype, p_mean=a.p_mean,
        p_std=a.p_std, sigma_data=a.sigma_data, threads=a.threads, progress=not a.no_progress,
        command="invsolve train " + shlex.join(argv),
        val_fraction=a.val_fraction, units=None if a.units is None else tuple(a.units),
        dicom_window=None if a.dicom_window is None else tuple(a.dicom_window),
    )
    res = train(cfg)
    print(f"trained {cfg.data} to step {res['step']}; prior in {res['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
