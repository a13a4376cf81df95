"""Distances between sample sets and image metrics used by the experiments."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def sliced_wasserstein(a: Tensor, b: Tensor, n_directions: int = 100, seed: int = 0, p: int = 2) -> float:
    """Sliced p-Wasserstein distance between two empirical distributions in R^d.

    a (n, d), b (m, d). Both sets are projected on ``n_directions`` random unit directions (seeded); the
    1-D distance between the projections is computed from quantile functions at max(n, m) levels; the
    result is (mean over directions of W_p^p)^(1/p) (Bonneel et al. 2015). Written by hand (a dozen lines)
    instead of adding POT as a dependency.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (n, d) and (m, d) sample sets, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double().cpu(), b.double().cpu()
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(a.shape[1], n_directions, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, pb = torch.sort(a @ dirs, dim=0).values, torch.sort(b @ dirs, dim=0).values
    n = max(len(pa), len(pb))
    levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    qa, qb = _quantiles(pa, levels), _quantiles(pb, levels)
    return float(((qa - qb).abs() ** p).mean() ** (1 / p))


def _quantiles(sorted_proj: Tensor, levels: Tensor) -> Tensor:
    """Empirical quantile function (left-continuous step) of sorted samples at the given levels."""
    n = len(sorted_proj)
    idx = torch.clamp((levels * n).floor().long(), 0, n - 1)
    return sorted_proj[idx]


def psnr(x_hat: Tensor, x: Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole batch (images in [0, data_range])."""
    from deepinv.loss.metric import PSNR

    return float(PSNR(max_pixel=data_range)(x_hat.float(), x.float()).mean())


# --- per-sample image / field metrics (evaluation runner, reconstruct) ------------------------------
def _to_unit(x: Tensor, data_range: tuple[float, float]) -> Tensor:
    """x mapped from [lo, hi] to [0, 1] and clipped there, float64 on the CPU."""
    lo, hi = data_range
    return ((x.detach().double().cpu() - lo) / (hi - lo)).clamp(0, 1)


def psnr_per_sample(x_hat: Tensor, x: Tensor, data_range: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """PSNR in dB of each sample, shape (B,), with peak hi - lo (deepinv's PSNR).

    x_hat and x: (B, C, H, W) in the data units [lo, hi]; x_hat is clipped to [lo, hi] first.
    """
    from deepinv.loss.metric import PSNR

    return PSNR(max_pixel=1.0)(_to_unit(x_hat, data_range), _to_unit(x, data_range)).reshape(-1)


def ssim_per_sample(x_hat: Tensor, x: Tensor, data_range: tuple[float, float] = (0.0, 1.0),
                    window: int = 11) -> Tensor:
    """SSIM (Wang et al. 2004, Gaussian window, kornia.metrics.ssim) of each sample, shape (B,).

    x_hat and x: (B, C, H, W) in [lo, hi], mapped to [0, 1] (x_hat clipped). The window shrinks to the
    largest odd size that fits images smaller than ``window`` pixels.
    """
    from kornia.metrics import ssim

    if x.ndim != 4:
        raise ValueError(f"SSIM needs (B, C, H, W) images, got shape {tuple(x.shape)}")
    w = min(window, min(x.shape[-2:]) - (1 - min(x.shape[-2:]) % 2))
    smap = ssim(_to_unit(x_hat, data_range), _to_unit(x, data_range), window_size=max(w, 1), max_val=1.0)
    return smap.flatten(1).mean(1)


def relative_l2(x_hat: Tensor, x: Tensor) -> Tensor:
    """||x_hat - x|| / ||x|| per sample, shape (B,), on the raw (unclipped) estimate."""
    d = (x_hat.detach().double().cpu() - x.detach().double().cpu()).flatten(1)
    return d.norm(dim=1) / x.detach().double().cpu().flatten(1).norm(dim=1)


class LPIPS:
    """LPIPS (Zhang et al. 2018, AlexNet variant) through torchmetrics, from local weights only.

    ``backbone``: a file with torchvision's AlexNet ImageNet weights (``alexnet-owt-7be5be79.pth``, a
    state dict of ``torchvision.models.alexnet``). The LPIPS linear layers ship inside torchmetrics. No
    file is ever downloaded: a missing backbone raises ``ValueError``, and the runner then records LPIPS
    as unavailable with the reason.
    """

    #: smallest side AlexNet's strided convolutions and two 3x3 max-pools accept
    min_size = 31

    def __init__(self, backbone: str | Path, device: str | torch.device = "cpu"):
        backbone = Path(backbone)
        if not backbone.is_file():
            raise ValueError(f"LPIPS backbone weights {backbone} do not exist; give the path of "
                             "torchvision's AlexNet weights (alexnet-owt-7be5be79.pth)")
        try:
            import torchvision
            from torchmetrics.functional.image.lpips import _NoTrainLpips
        except ImportError as err:
            raise ValueError(f"LPIPS needs torchmetrics and torchvision ({err}): pip install "
                             "torchmetrics") from err
        state = torch.load(backbone, map_location="cpu", weights_only=True)
        reference = torchvision.models.alexnet(weights=None)
        try:
            reference.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{backbone} is not a torchvision AlexNet state dict: {err}") from err
        # pnet_rand=True builds the backbone without torchvision's download; its slices hold the modules
        # features[i] under the names "slice{k}.{i}", which take the local weights here.
        net = _NoTrainLpips(net="alex", pnet_rand=True)
        features = dict(reference.features.named_parameters())
        for name, p in net.net.named_parameters():
            _, idx, leaf = name.split(".")
            p.data.copy_(features[f"{idx}.{leaf}"])
        self.net = net.to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, x_hat: Tensor, x: Tensor, data_range: tuple[float, float] = (0.0, 1.0)) -> Tensor:
        """LPIPS of each sample, shape (B,); (B, 3, H, W) images in [lo, hi] (x_hat clipped)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS needs RGB images (B, 3, H, W), got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"LPIPS (AlexNet) needs images of at least {self.min_size} x {self.min_size} "
                             f"pixels, got {tuple(x.shape[-2:])}")
        a = _to_unit(x_hat, data_range).float().to(self.device)
        b = _to_unit(x, data_range).float().to(self.device)
        return self.net(a, b, normalize=True).reshape(-1).double().cpu()
