"""Public checkpoints and the project's shipped checkpoints as canonical priors.

Every loader wraps the network once, at the boundary (``NetworkPrior``), so ``prior.denoise(x, sigma)``
takes images in [0, 1] whatever the network was trained on. Nothing here downloads: public weights
are read from a local ``path`` and a missing file raises an error that says where to get it.

- Guided diffusion (Dhariwal & Nichol 2021, arXiv 2105.05233) checkpoints used by DPS / DAPS / MCG /
  RED-diff: FFHQ-256 ``ffhq_10m.pt`` and ImageNet-256 ``256x256_diffusion_uncond.pt``, in deepinv's
  ``DiffUNet`` architecture: discrete 1000-step linear-beta VP, eps-prediction, learned variance
  ignored, data in [-1, 1]. So D(x, sigma) = ((x_n - s eps(alpha x_n, t)) + 1) / 2 with x_n = 2x - 1,
  s = 2 sigma, t = t(s) on the DDPM schedule and alpha = 1 / sqrt(1 + s^2).
- EDM (Karras et al. 2022, arXiv 2206.00364) models in deepinv: ``NCSNpp`` (DDPM++ / NCSN++) and
  ``ADMUNet``, already preconditioned denoisers in [-1, 1]; any deepinv ``EDMPrecond``.
- diffusers ``UNet2DModel`` repositories (optional dependency ``diffusers``): the scheduler config
  decides the path (DDPM betas or flow matching) and the prediction type.
- Flow-matching velocity networks (torchcfm / flow_matching style): ``from_flow``.
- Shipped priors trained by ``invsolve train`` (``natural-rgb``, ``phantom-ct``, ``darcy``) in ``priors/weights``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from invsolve import paths as P

from .checkpoint import load_state_dict, load_strict, read_checkpoint  # noqa: F401  (re-exported)
from .network import NetworkPrior
from .registry import register
from .unet import load_prior

WEIGHTS = Path(__file__).parent / "weights"

SOURCES = {
    "ffhq-256-dps": (
        "ffhq_10m.pt (guided-diffusion FFHQ-256 of DPS, Chung et al. 2023): the DPS README's Google "
        "Drive folder https://drive.google.com/drive/folders/1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh or "
        "deepinv's copy https://huggingface.co/deepinv/diffunet/resolve/main/diffusion_ffhq_10m.pt"),
    "imagenet-256-guided": (
        "256x256_diffusion_uncond.pt (openai/guided-diffusion): https://openaipublic.blob.core."
        "windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt or deepinv's copy "
        "https://huggingface.co/deepinv/diffunet/resolve/main/diffusion_openai.pt"),
    "edm-ffhq-64-ve": ("edm-ffhq-64x64-uncond-ve.pt: https://huggingface.co/deepinv/edm/resolve/main/"
                       "edm-ffhq-64x64-uncond-ve.pt (NVlabs/edm weights as deepinv state dicts)"),
    "edm-ffhq-64-vp": ("edm-ffhq-64x64-uncond-vp.pt: https://huggingface.co/deepinv/edm/resolve/main/"
                       "edm-ffhq-64x64-uncond-vp.pt"),
}


def _need(path: str | Path | None, name: str) -> Path:
    where = SOURCES.get(name, "the model's home page")
    if path is None:
        raise FileNotFoundError(f"prior {name!r} needs its weights file: pass path=... ; get {where}")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; prior {name!r} needs {where}")
    return path


class _Call(nn.Module):
    """``net(x, t)`` through an adapter ``fn(net, x, t)`` (keeps ``net`` a registered submodule)."""

    def __init__(self, net: nn.Module, fn: Callable[[nn.Module, Tensor, Tensor], Tensor]):
        super().__init__()
        self.net, self.fn = net, fn

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.fn(self.net, x, t)


# -- guided diffusion (DPS / DAPS FFHQ, ImageNet) ------------------------------------------------

def _vp_precond_time(t: Tensor) -> Tensor:
    """EDM's ``VPPrecond`` network time c_noise = (M - 1) t, M = 1000 (DAPS's model/precond.py)."""
    return 999 * t


def from_guided_diffusion(net: nn.Module, schedule: str = "discrete") -> NetworkPrior:
    """A canonical prior from a deepinv ``DiffUNet`` (guided-diffusion UNet, eps + learned variance).

    ``schedule="discrete"`` (default): the discrete 1000-step linear VP (beta 1e-4 .. 0.02) in
    [-1, 1], the network called on the continuous step index t (its sinusoidal embedding accepts
    non-integer steps), as DPS / DDRM / guided diffusion query it. ``schedule="vp_linear"``: the
    conversion of the official DAPS code (zhangbingliang2019/DAPS ``model/precond.py``, EDM's
    ``VPPrecond``): sigma -> t on the continuous VP-linear schedule (beta_min 0.1, beta_d 19.9) and
    the network called at 999 t, so DAPS's sigmas reach the network exactly as in its code.
    """
    module = _Call(net, lambda n, x, t: n.forward_diffusion(x, t))
    channels = getattr(net, "in_channels", None)
    if schedule == "vp_linear":
        return NetworkPrior(module, "eps", P.VPLinear(0.1, 20.0), data_range=(-1.0, 1.0),
                            time_fn=_vp_precond_time, learned_variance=True, channels=channels)
    if schedule != "discrete":
        raise ValueError(f"schedule must be 'discrete' or 'vp_linear' (DAPS's VPPrecond), "
                         f"got {schedule!r}")
    return NetworkPrior(module, "eps", P.VPDiscrete(), data_range=(-1.0, 1.0), learned_variance=True,
                        channels=channels)


def guided_diffusion(path: str | Path | None = None, large_model: bool = False,
                     name: str = "ffhq-256-dps", schedule: str = "discrete") -> NetworkPrior:
    """Load a guided-diffusion checkpoint from ``path`` into deepinv's ``DiffUNet``.

    ``large_model=False``: the FFHQ-256 model of DPS (``ffhq_10m.pt``); True: ImageNet-256
    unconditional (``256x256_diffusion_uncond.pt``). ``schedule``: see ``from_guided_diffusion``
    ("vp_linear" for DAPS's conversion).
    """
    from deepinv.models import DiffUNet

    path = _need(path, name)
    net = DiffUNet(in_channels=3, out_channels=3, large_model=large_model, pretrained=None)
    return from_guided_diffusion(load_strict(net, load_state_dict(path), name), schedule)


@register("ffhq-256-dps", "guided-diffusion FFHQ-256 (DPS/DAPS ffhq_10m.pt); needs path=")
def _ffhq(path: str | Path | None = None, schedule: str = "discrete") -> NetworkPrior:
    return guided_diffusion(path, large_model=False, name="ffhq-256-dps", schedule=schedule)


@register("imagenet-256-guided", "guided-diffusion ImageNet-256 unconditional; needs path=")
def _imagenet(path: str | Path | None = None, schedule: str = "discrete") -> NetworkPrior:
    return guided_diffusion(path, large_model=True, name="imagenet-256-guided", schedule=schedule)


# -- EDM models in deepinv ----------------------------------------------------------------------

def from_edm(net: nn.Module, data_range: tuple[float, float] = (-1.0, 1.0)) -> NetworkPrior:
    """A canonical prior from an EDM-preconditioned denoiser ``net(x, sigma)`` in ``data_range`` units.

    deepinv ``NCSNpp`` / ``ADMUNet`` are called with ``input_in_minus_one_one=True`` so that the
    range conversion happens here, once; a deepinv ``EDMPrecond`` (or any ``D(x, sigma)``) as is.
    """
    from deepinv.models import ADMUNet, NCSNpp

    if isinstance(net, (NCSNpp, ADMUNet)):
        module = _Call(net, lambda n, x, s: n(x, s, input_in_minus_one_one=True))
    else:
        module = _Call(net, lambda n, x, s: n(x, s))
    return NetworkPrior(module, "x0", "ve", data_range=data_range,
                        channels=getattr(net, "img_channels", getattr(net, "in_channels", None)))


def edm(path: str | Path | None = None, arch: str = "ncsnpp", name: str = "edm-ffhq-64-ve",
        **arch_kw) -> NetworkPrior:
    """Load an EDM checkpoint (deepinv state dict) into ``NCSNpp`` (``arch="ncsnpp"``) or ``ADMUNet``.

    ``arch_kw`` go to the architecture (e.g. ``model_type="ddpm"`` for the VP FFHQ model); the
    preconditioning uses sigma_data = 0.5 on [-1, 1] data as in EDM.
    """
    from deepinv.models import ADMUNet, NCSNpp

    path = _need(path, name)
    cls = {"ncsnpp": NCSNpp, "adm": ADMUNet}[arch]
    net = cls(pretrained=None, pixel_std=0.5, **arch_kw)
    return from_edm(load_strict(net, load_state_dict(path), name))


@register("edm-ffhq-64-ve", "EDM NCSN++ FFHQ-64 (deepinv weights); needs path=")
def _edm_ve(path: str | Path | None = None) -> NetworkPrior:
    return edm(path, "ncsnpp", "edm-ffhq-64-ve", model_type="ncsn")


@register("edm-ffhq-64-vp", "EDM DDPM++ FFHQ-64 (deepinv weights); needs path=")
def _edm_vp(path: str | Path | None = None) -> NetworkPrior:
    return edm(path, "ncsnpp", "edm-ffhq-64-vp", model_type="ddpm")


# -- diffusers -------------------------------------------------------------------------------------

def scheduler_path(config: dict) -> tuple[P.Path, str, Callable[[Tensor], Tensor] | None]:
    """(path, parameterization, time_fn) described by a diffusers scheduler config dictionary.

    DDPM-family schedulers: betas from ``beta_schedule`` ("linear", "scaled_linear",
    "squaredcos_cap_v2") or ``trained_betas``; ``prediction_type`` "epsilon" / "v_prediction" /
    "sample". ``FlowMatchEulerDiscreteScheduler``: x_t = (1 - t) x0 + t n with velocity n - x0 and
    network time 1000 t (Esser et al. 2024, arXiv 2403.03206).
    """
    n = int(config.get("num_train_timesteps", 1000))
    if "FlowMatch" in config.get("_class_name", ""):
        return P.LinearFlow(noise_at_zero=False), "velocity", lambda t: t * n
    if config.get("trained_betas") is not None:
        betas = torch.as_tensor(config["trained_betas"], dtype=torch.float64)
    else:
        b0, b1 = config.get("beta_start", 1e-4), config.get("beta_end", 0.02)
        kind = config.get("beta_schedule", "linear")
        if kind == "linear":
            betas = torch.linspace(b0, b1, n, dtype=torch.float64)
        elif kind == "scaled_linear":
            betas = torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float64) ** 2
        elif kind == "squaredcos_cap_v2":  # Nichol & Dhariwal 2021, Eq. 17, betas capped at 0.999
            f = [math.cos((i / n + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(n + 1)]
            betas = torch.tensor([min(1 - f[i + 1] / f[i], 0.999) for i in range(n)],
                                 dtype=torch.float64)
        else:
            raise ValueError(f"unsupported beta_schedule {kind!r}")
    kinds = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
    pred = config.get("prediction_type", "epsilon")
    if pred not in kinds:
        raise ValueError(f"unsupported prediction_type {pred!r}")
    return P.VPDiscrete(betas=betas), kinds[pred], None


def from_diffusers(repo: str | Path, subfolder: str | None = None,
                   data_range: tuple[float, float] = (-1.0, 1.0)) -> NetworkPrior:
    """A canonical prior from a diffusers ``UNet2DModel`` repository (local folder or hub id).

    Reads the UNet from ``repo`` (or ``repo/subfolder``, default "unet" when it exists) and the
    scheduler config from ``repo/scheduler/scheduler_config.json`` or ``repo/scheduler_config.json``.
    Needs the optional dependency ``diffusers`` (``pip install diffusers``); a hub id is resolved by
    diffusers (needs internet once).
    """
    try:
        from diffusers import UNet2DModel
    except ImportError as err:
        raise ImportError("from_diffusers needs the optional package diffusers: pip install diffusers") from err
    root = Path(repo)
    if root.exists():
        if subfolder is None and (root / "unet").is_dir():
            subfolder = "unet"
        cfg_file = next((f for f in (root / "scheduler" / "scheduler_config.json",
                                     root / "scheduler_config.json") if f.exists()), None)
        if cfg_file is None:
            raise FileNotFoundError(f"no scheduler_config.json in {root} or {root / 'scheduler'}")
        config = json.loads(cfg_file.read_text())
    else:
        from diffusers import DDPMScheduler

        config = dict(DDPMScheduler.load_config(str(repo), subfolder="scheduler"))
    unet = UNet2DModel.from_pretrained(str(repo), subfolder=subfolder).eval().requires_grad_(False)
    path, kind, time_fn = scheduler_path(config)
    module = _Call(unet, lambda n, x, t: n(x, t).sample)
    return NetworkPrior(module, kind, path, data_range=data_range, time_fn=time_fn)


# -- flow matching ---------------------------------------------------------------------------------

def from_flow(net: nn.Module, noise_at_zero: bool = True, data_range: tuple[float, float] = (-1.0, 1.0),
              time_fn: Callable[[Tensor], Tensor] | None = None) -> NetworkPrior:
    """A canonical prior from a velocity network ``net(x_t, t)`` on the linear path.

    ``noise_at_zero=True`` is the torchcfm / flow_matching convention x_t = t x1 + (1 - t) x0 with
    x0 noise and velocity x1 - x0 (Lipman et al. 2023, arXiv 2210.02747); False puts data at t = 0
    (rectified flow / diffusers). State which one your network used: they differ by t -> 1 - t.
    """
    return NetworkPrior(net, "velocity", P.LinearFlow(noise_at_zero=noise_at_zero),
                        data_range=data_range, time_fn=time_fn)


# -- shipped priors ----------------------------------------------------------------------------------

def shipped(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> NetworkPrior:
    """A prior trained by ``invsolve train`` and shipped in ``priors/weights/<name>``."""
    return load_prior(WEIGHTS / name, device=device, dtype=dtype)


@register("trained", "a run folder of `invsolve train` (prior.json + model.pt); needs path=")
def _trained(path: str | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> NetworkPrior:
    if path is None:
        raise ValueError("prior 'trained' needs path=<run folder of invsolve train> (the folder holding "
                         "prior.json and model.pt)")
    return load_prior(path, device=device, dtype=dtype)


@register("natural-rgb", "shipped: UNet (EDM) on RGB photo patches from scikit-image, [0, 1]")
def _natural(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> NetworkPrior:
    return shipped("natural-rgb", device, dtype)


@register("phantom-ct", "shipped: UNet (EDM) on random ellipse phantoms (1 channel, [0, 1])")
def _phantom(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> NetworkPrior:
    return shipped("phantom-ct", device, dtype)


@register("darcy", "shipped: UNet (EDM) on Darcy permeabilities a in {3, 12}, 64 x 64 (1 channel, units of a)")
def _darcy(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> NetworkPrior:
    return shipped("darcy", device, dtype)
