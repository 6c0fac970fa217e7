"""Denoiser presets: `paper` (the ICML ConvNeXt U-Net, SPEC.md 2.1) and `default` (a lean diffusers UNet2DModel).

`build_denoiser(preset, image_size, in_channels, context_dim, **overrides)` returns a module with
forward(x, t, context=None) -> eps [B, 1, H, W], x holding `in_channels` channels (noisy image first, then
the stacked exemplar if any) and t the integer timesteps. `overrides` change the preset's keyword
arguments (e.g. n_feat=60 for the paper's QuickDraw-FS model, or tiny widths in tests); they are part of
the generator's config, so a run directory rebuilds the same network.
"""

from __future__ import annotations

from torch import nn

from drawgap.models.diffusion.lean_unet import LeanUNet
from drawgap.models.diffusion.paper_unet import PaperUNet

PRESETS: dict[str, tuple[type[nn.Module], dict]] = {
    # the ICML denoiser for Omniglot (n_feat 60 for QuickDraw-FS): 8,488,721 parameters
    "paper": (PaperUNet, {"n_feat": 48}),
    # chosen by measured quality per CPU second (the table in lean_unet.py): 1,046,017 parameters
    "default": (LeanUNet, {"block_out_channels": (32, 64, 64), "layers_per_block": 1}),
}


def build_denoiser(
    preset: str,
    image_size: int,
    in_channels: int = 2,
    context_dim: int | None = None,
    num_train_timesteps: int = 500,
    **overrides,
) -> nn.Module:
    if preset not in PRESETS:
        raise ValueError(f"unknown denoiser preset {preset!r}; expected one of {', '.join(PRESETS)}")
    cls, kwargs = PRESETS[preset]
    kwargs = {**kwargs, **overrides, "in_channels": in_channels, "context_dim": context_dim}
    if cls is PaperUNet:
        if image_size % 4:
            raise ValueError(f"the paper denoiser halves the image twice: image_size must be a multiple of 4, got {image_size}")
        return PaperUNet(num_train_timesteps=num_train_timesteps, **kwargs)
    levels = len(kwargs["block_out_channels"])
    if image_size % 2 ** (levels - 1):
        raise ValueError(f"{levels} levels need an image_size divisible by {2 ** (levels - 1)}, got {image_size}")
    return LeanUNet(image_size=image_size, **kwargs)
