"""Reading weights files with errors that say what is wrong: one place for every loader."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn


def read_checkpoint(path: str | Path, expected: str) -> object:
    """``torch.load`` of a weights file (weights only, on the CPU), with a ValueError naming the file
    and the ``expected`` format when it cannot be read (corrupt, truncated, a pickle of code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(f"cannot read {path} as a PyTorch weights file ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]}); expected {expected}") from err


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint's state dict (unwrapping ``{"state_dict": ...}`` / ``{"model": ...}``)."""
    sd = read_checkpoint(path, "a state dict of tensors saved with torch.save (optionally under "
                               "'ema', 'state_dict', 'model' or 'net')")
    for key in ("ema", "state_dict", "model", "net"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{path} holds a {type(sd).__name__}, not a state dict of tensors")
    return sd


def load_strict(module: nn.Module, state: dict[str, Tensor], what: str) -> nn.Module:
    """Load ``state`` into ``module``, failing with the missing / unexpected / mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or extra or shapes:
        raise ValueError(f"{what}: checkpoint does not match the architecture; missing {missing[:5]} "
                         f"({len(missing)}), unexpected {extra[:5]} ({len(extra)}), shapes {shapes[:5]}")
    module.load_state_dict(state)
    return module.eval().requires_grad_(False)
