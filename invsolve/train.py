"""Train a prior: EDM denoising score matching or conditional flow matching, resumable.

``invsolve train --data natural-rgb --out runs/natural-rgb --steps 4000`` (or ``train(TrainConfig(...))``)
trains the project's ``UNet`` on random crops and writes to ``--out``:

- ``ckpt.pt`` every ``ckpt_every`` steps: weights, EMA weights, optimizer, step, losses and every RNG
  state, so a resumed run (same ``--out``, larger ``--steps``) reproduces an uninterrupted one exactly;
- ``model.pt`` (the EMA weights) and ``prior.json`` (architecture, path, parameterisation, data range,
  data set and split, steps, the exact command), loadable with ``invsolve.priors.unet.load_prior``.

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
import dataclasses
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

# Fields that may change between a run and its resumption without changing the result.
_RESUMABLE = {"steps", "progress", "threads", "ckpt_every", "command"}


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in the checkpoint and in prior.json)."""

    data: str = "natural-rgb"
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


def prior_info(cfg: TrainConfig, net, data_info: dict, step: int) -> dict:
    """The prior.json dictionary of a run at ``step``."""
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
            "--lr", cfg.lr, "--warmup", cfg.warmup, "--ema-decay", cfg.ema_decay,
            "--seed", cfg.seed, "--p-mean", cfg.p_mean, "--p-std", cfg.p_std,
            "--sigma-data", cfg.sigma_data, "--device", cfg.device, "--dtype", cfg.dtype]
    return "invsolve train " + shlex.join(str(a) for a in args)


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

    from invsolve.priors.datasets import training_data

    device, dtype = torch.device(cfg.device), getattr(torch, cfg.dtype)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    sampler, data_info = training_data(cfg.data, cfg.crop, seed=cfg.seed, scales=tuple(cfg.scales))
    torch.manual_seed(cfg.seed)  # initial weights
    net, precond = _build(cfg, sampler.channels)
    net.to(device=device, dtype=dtype)
    ema = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    step, losses = 0, []

    ckpt_path = out / "ckpt.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        # fields added after a checkpoint was written count as their defaults
        saved = {**dataclasses.asdict(TrainConfig()), **ck["config"]}
        saved = {k: v for k, v in saved.items() if k not in _RESUMABLE}
        now = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RESUMABLE}
        if json.loads(json.dumps(saved)) != json.loads(json.dumps(now)):
            diff = {k: (saved.get(k), now.get(k)) for k in now if saved.get(k) != now.get(k)}
            raise ValueError(f"{ckpt_path} was trained with a different configuration: {diff}; "
                             "use a new --out or the same settings")
        net.load_state_dict(ck["net"])
        for e, v in zip(ema, ck["ema"]):
            e.copy_(v)
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        torch.set_rng_state(ck["torch_rng"])
        if device.type == "cuda" and ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"], device)
        step, losses = ck["step"], list(ck["losses"])

    def checkpoint() -> None:
        _save(ckpt_path, {
            "net": net.state_dict(), "ema": ema, "opt": opt.state_dict(), "gen": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "step": step, "losses": losses, "config": dataclasses.asdict(cfg),
        })
        ema_sd = {k: v for k, v in net.state_dict().items()}
        for (k, _), e in zip(net.named_parameters(), ema):
            ema_sd[k] = e
        _save(out / "model.pt", {k: v.detach().to("cpu", torch.float32).clone() for k, v in ema_sd.items()})
        (out / "prior.json").write_text(json.dumps(prior_info(cfg, net, data_info, step), indent=1))

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
            "seconds": time.time() - t0}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="invsolve train", description=__doc__.split("\n\n")[0])
    d = TrainConfig()
    p.add_argument("--data", default=d.data, help="natural-rgb, phantom-ct or darcy")
    p.add_argument("--out", default=None, help="run folder (checkpoints, model.pt, prior.json)")
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
    p.add_argument("--device", default=d.device)
    p.add_argument("--dtype", default=d.dtype)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``invsolve train``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    a = _parser().parse_args(argv)
    cfg = TrainConfig(
        data=a.data, out=a.out or f"train_runs/{a.data}", objective=a.objective, steps=a.steps,
        batch=a.batch, crop=a.crop, channels=a.channels, channel_mult=tuple(a.channel_mult),
        num_res_blocks=a.num_res_blocks, attention=a.attention, scales=tuple(a.scales), lr=a.lr,
        warmup=a.warmup, ema_decay=a.ema_decay,
        ckpt_every=a.ckpt_every, seed=a.seed, device=a.device, dtype=a.dtype, p_mean=a.p_mean,
        p_std=a.p_std, sigma_data=a.sigma_data, threads=a.threads, progress=not a.no_progress,
        command="invsolve train " + shlex.join(argv),
    )
    res = train(cfg)
    print(f"trained {cfg.data} to step {res['step']}; prior in {res['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
