"""The project's small UNet and the EDM preconditioning that turns it into a canonical denoiser.

``UNet(x, c)`` is a fully convolutional, noise-level conditioned UNet (GroupNorm, scale-shift
conditioning, no attention), so a net trained on crops applies to larger images of any size (inputs are
reflect-padded to a multiple of the total downsampling and cropped back). ``c`` is a per-sample scalar:
EDM's ``c_noise = log(sigma) / 4`` for denoisers, the flow time t for velocity networks.

``EDMPrecond(net, sigma_data)`` is the preconditioning of Karras et al. 2022 ("Elucidating the Design
Space of Diffusion-Based Generative Models", arXiv 2206.00364, Table 1 and Eq. 7):
``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)``.

``load_prior(folder)`` rebuilds a trained prior from a ``prior.json`` + ``model.pt`` folder written by
``invsolve.train``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invsolve import paths as P

from .checkpoint import load_strict, read_checkpoint
from .network import NetworkPrior


def _groups(channels: int, groups: int) -> int:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class FourierEmbedding(nn.Module):
    """Sin/cos features of a scalar at fixed log-spaced frequencies (1 .. max_freq), then an MLP."""

    def __init__(self, dim: int, num_freqs: int = 32, max_freq: float = 100.0):
        super().__init__()
        self.register_buffer("freqs", torch.logspace(0, math.log10(max_freq), num_freqs))
        self.mlp = nn.Sequential(nn.Linear(2 * num_freqs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c: Tensor) -> Tensor:
        arg = c.reshape(-1, 1).to(self.freqs.dtype) * self.freqs
        return self.mlp(torch.cat([arg.sin(), arg.cos()], dim=1))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, conditioned by a per-channel scale and shift of the second norm."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int = 8, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in, groups), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out, groups), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Multi-head self-attention over all pixels of a feature map (pre-norm, residual, zero-initialised
    output), as in the lowest-resolution blocks of DDPM / ADM (Ho et al. 2020; Dhariwal & Nichol 2021)."""

    def __init__(self, channels: int, heads: int = 4, groups: int = 8):
        super().__init__()
        self.heads = _groups(channels, heads)
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """Fully convolutional noise-conditioned UNet: ``forward(x (B,C,H,W), c (B,)) -> (B,C_out,H,W)``.

    Args:
        in_channels / out_channels: image channels (out defaults to in).
        channels: width of the first level; level i has ``channels * channel_mult[i]``.
        channel_mult: one entry per resolution; each extra entry halves the resolution.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        groups: GroupNorm groups; dropout: inside residual blocks.
        attention: self-attention after each middle block (lowest resolution), for a receptive field
            that spans the whole image (box inpainting, strong noise); off in the first shipped priors.

    Default (channels=32, mult (1, 2, 2), 2 blocks) has about 1.6 M parameters.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 2,
        groups: int = 8,
        dropout: float = 0.0,
        attention: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or in_channels
        self.config = {"in_channels": in_channels, "out_channels": out_channels, "channels": channels,
                           "channel_mult": list(channel_mult), "num_res_blocks": num_res_blocks,
                           "groups": groups, "dropout": dropout, "attention": attention}
        emb_dim = 4 * channels
        self.embed = FourierEmbedding(emb_dim)
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch = [channels], channels
        for lvl, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, channels * mult, emb_dim, groups, dropout))
                ch = channels * mult
                skips.append(ch)
            if lvl < len(channel_mult) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, groups, dropout) for _ in range(2)])
        self.mid_attn = nn.ModuleList([AttnBlock(ch, groups=groups) for _ in range(2)] if attention else [])
        self.up = nn.ModuleList()
        for lvl, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), channels * mult, emb_dim, groups, dropout))
                ch = channels * mult
            if lvl > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.head = nn.Sequential(nn.GroupNorm(_groups(ch, groups), ch), nn.SiLU(),
                                  nn.Conv2d(ch, out_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.factor = 2 ** (len(channel_mult) - 1)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        ph, pw = (-H) % self.factor, (-W) % self.factor
        if ph or pw:  # fully convolutional: pad to a multiple of the downsampling, crop back
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(H, W) > max(ph, pw) else "replicate")
        emb = self.embed(c.expand(x.shape[0]) if c.ndim == 0 else c).to(x.dtype)
        h = self.stem(x)
        hs = [h]
        for m in self.down:
            h = m(h, emb) if isinstance(m, ResBlock) else m(h)
            hs.append(h)
        for j, m in enumerate(self.mid):
            h = m(h, emb)
            if self.mid_attn:
                h = self.mid_attn[j](h)
        for m in self.up:
            h = m(torch.cat([h, hs.pop()], 1), emb) if isinstance(m, ResBlock) else m(h)
        return self.head(h)[..., :H, :W]


class EDMPrecond(nn.Module):
    """EDM preconditioning (Karras et al. 2022, arXiv 2206.00364, Table 1, "Ours" column).

    ``forward(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`` with c_skip = sd^2 / (sigma^2 + sd^2),
    c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = log(sigma) / 4;
    x and sigma in the network's units (sd = ``sigma_data``, 0.5 for images in [-1, 1]).
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise), each of sigma's shape."""
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        c_in = 1 / (sigma**2 + sd2).sqrt()
        return c_skip, c_out, c_in, sigma.log() / 4

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = (P.bcast(c, x) if i < 3 else c
                                        for i, c in enumerate(self.coefficients(sigma)))
        return c_skip * x + c_out * self.net(c_in * x, c_noise).to(x.dtype)


def build_prior(info: dict, state_dict: dict | None = None) -> NetworkPrior:
    """A canonical prior from a ``prior.json`` dictionary (and optionally the network's weights).

    ``info["objective"]`` "edm": an EDM-preconditioned denoiser on the VE path (x0-prediction);
    "flow": a velocity network on the linear path (data at t = 0, the UNet conditioned on t).
    """
    net = UNet(**info["architecture"]["kwargs"])
    if state_dict is not None:
        load_strict(net, {k: v.float() for k, v in state_dict.items()}, "model.pt for its prior.json")
    net.eval()
    kw = {"data_range": tuple(info["data_range"]), "units": tuple(info.get("units", (0.0, 1.0)))}
    kw["channels"] = net.config["in_channels"]
    if info["objective"] == "edm":
        prior = NetworkPrior(EDMPrecond(net, info["sigma_data"]), "x0", "ve", **kw)
    elif info["objective"] == "flow":
        prior = NetworkPrior(net, "velocity", P.LinearFlow(noise_at_zero=False), **kw)
    else:
        raise ValueError(f"unknown objective {info['objective']!r} in prior.json")
    prior.info = info
    return prior.requires_grad_(False)


def load_prior(folder: str | Path, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, precision: str | None = None) -> NetworkPrior:
    """Load a prior trained by ``invsolve.train`` from ``folder`` (``prior.json`` + ``model.pt``).

    ``precision``: "bf16" (or "fp16" on CUDA) runs the network under autocast, the rest in ``dtype``
    (``NetworkPrior.set_precision``)."""
    folder = Path(folder)
    meta, weights = folder / "prior.json", folder / "model.pt"
    for f in (meta, weights):
        if not f.exists():
            raise FileNotFoundError(f"{f} is missing; train it with `invsolve train --out {folder}` "
                                    "(see the command recorded in the shipped prior.json)")
    try:
        info = json.loads(meta.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta} is not valid JSON ({err}); expected the prior.json written by "
                         "invsolve train") from err
    state = read_checkpoint(weights, "the model.pt (EMA state dict) written by invsolve train")
    return build_prior(info, state).to(device=device, dtype=dtype).set_precision(precision)
