"""Gallery of every registered imaging operator: x and what a user sees of it (A(x), or A^T y / FBP /
|zero-filled| where the measurement is not an image).

Photos: scikit-image's astronaut (RGB, 128x128); CT and MRI: the Shepp-Logan phantom (128x128).
Writes experiments/results/operators/gallery.png. Run: python experiments/operator_gallery.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from skimage.data import astronaut, shepp_logan_phantom
from skimage.transform import resize

from invsolve import operators
from invsolve.operators.mri import to_complex_channels

OUT = Path(__file__).parent / "results" / "operators" / "gallery.png"
N = 128


def _photo() -> torch.Tensor:
    img = resize(astronaut(), (N, N, 3), anti_aliasing=True)
    return torch.from_numpy(img).permute(2, 0, 1)[None].float()


def _phantom() -> torch.Tensor:
    return torch.from_numpy(resize(shepp_logan_phantom(), (N, N), anti_aliasing=True))[None, None].float()


def _show(ax, t: torch.Tensor, title: str) -> None:
    a = t[0].detach().cpu().numpy()
    if a.shape[0] == 1:
        ax.imshow(a[0], cmap="gray", aspect="auto" if a.shape[1] != a.shape[2] else "equal")
    else:
        ax.imshow(np.clip(a.transpose(1, 2, 0), 0, 1))
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def panels() -> list[tuple[str, torch.Tensor, torch.Tensor, str]]:
    """(name, x, picture of the measurement, what the picture is) for every operator."""
    x, ph = _photo(), _phantom()
    img = (3, N, N)
    out = []
    photo_ops = [("blur_gauss", {}), ("blur_motion", {}), ("blur_uniform", {}),
                 ("blur_gauss", {"padding": "valid"}), ("inpaint_box", {}), ("inpaint_random", {}),
                 ("inpaint_half", {}), ("inpaint_freeform", {}), ("sr2", {}), ("sr4", {}), ("sr8", {}),
                 ("sr4_pool", {}), ("denoise", {"noise_sigma": 0.1}), ("colorize", {}), ("hdr", {})]
    for name, kw in photo_ops:
        op = operators.build(name, img_size=img, **kw)
        y = op(x)
        label = name + (" valid" if kw.get("padding") == "valid" else "")
        out.append((label, x, y, "y = A(x)"))
    pr = operators.build("phase_retrieval", img_size=img)
    out.append(("phase_retrieval", x, torch.fft.fftshift(pr(x), dim=(-2, -1)).log1p().mean(1, keepdim=True)
                / 2, "log(1+|F pad x|), centred"))
    for name, kw in [("ct_sparse", {"angles": 30}), ("ct_limited", {}), ("ct_fan", {})]:
        op = operators.build(name, img_size=(1, N, N), **kw)
        y = op(ph)
        out.append((name, ph, y / y.max(), "sinogram"))
        out.append((name + " FBP", ph, op.fbp(y).clamp(0, 1), "FBP(y)"))
    xc = to_complex_channels(ph)
    for name, kw in [("mri", {"acceleration": 4}), ("mri", {"acceleration": 8, "mask": "equispaced"}),
                     ("mri_multicoil", {"acceleration": 4})]:
        op = operators.build(name, img_size=(2, N, N), **kw)
        z = op.A_adjoint(op(xc))
        label = f"{name} x{kw['acceleration']} {kw.get('mask', 'random')}"
        out.append((label, ph, z.norm(dim=1, keepdim=True), "|A^T y| (zero-filled)"))
    return out


def main() -> None:
    rows = panels()
    cols = 6  # three (x, y) pairs per row
    nrow = (len(rows) + 2) // 3
    fig, axes = plt.subplots(nrow, cols, figsize=(cols * 1.7, nrow * 1.9))
    for ax in axes.flat:
        ax.axis("off")
    for i, (name, x, y, what) in enumerate(rows):
        _show(axes.flat[2 * i], x, f"x ({name})")
        _show(axes.flat[2 * i + 1], y, f"{name}: {what}")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
