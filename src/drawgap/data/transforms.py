"""Image transforms shared by datasets, critics and metrics (SPEC.md 1.1 and 4, "equalize statistics").

All functions take float tensors [N, 1, H, W] (or numpy arrays [N, H, W]) with ink high and return the same
kind. Resizing uses bilinear interpolation with antialiasing, the torchvision default for PIL images that
the papers' code relied on (torchvision itself is not a dependency: it does not import beside our torch).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def as_tensor_images(x) -> torch.Tensor:
    """uint8 [N,H,W] (ink 255) / float [N,H,W] / float [N,1,H,W] -> float32 tensor [N,1,H,W] in [0,1]."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32))
    elif x.dtype == torch.uint8:
        x = x.float() / 255.0
    x = x.float()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"expected images [N, H, W] or [N, 1, H, W], got {list(x.shape)}")
    return x


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear, antialiased resize of [N,1,H,W] to [N,1,size,size] (identity when already that size)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def scale_0_1(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-image min-max scaling to [0, 1] (the papers' Scale_0_1_batch); a blank image stays 0."""
    flat = x.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = (flat - lo).max(dim=1, keepdim=True).values
    return ((flat - lo) / hi.clamp_min(eps)).view_as(x)


def binarize(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """1 where the value is above `threshold`, else 0."""
    return (x > threshold).to(x.dtype)


def equalize(x, size: int, threshold: float = 0.5) -> torch.Tensor:
    """The papers' preprocessing before any critic: resize, per-image scale to [0, 1], binarize."""
    return binarize(scale_0_1(resize(as_tensor_images(x), size)), threshold)


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """float [N,1,H,W] or [N,H,W] in [0,1] -> uint8 [N,H,W], ink 255."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if x.ndim == 4:
        x = x[:, 0]
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
