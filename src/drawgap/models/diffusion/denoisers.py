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
    # chosen by measured quality per CPU second (the table in lean_unet.py): 806,145 parameters
    "default": (LeanUNet, {"block_out_channels": (24, 48, 64), "layers_per_block": 1, "norm_num_groups": 8}),
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


def preset_overrides(preset: str, n_feat: int | None = None, widths: str | None = None) -> dict:
    """The denoiser overrides of `drawgap train --n-feat / --widths`, checked against the preset.

    n_feat: the paper preset's width (48 Omniglot, 60 QuickDraw-FS); widths: "24,48,64", the default preset's
    `block_out_channels` (multiples of 8, its GroupNorm groups).
    """
    from drawgap.errors import InputError

    if preset not in PRESETS:
        raise InputError(f"expected a preset in {', '.join(PRESETS)}, got {preset!r}", field="--preset")
    overrides: dict = {}
    if n_feat is not None:
        if preset != "paper":
            raise InputError("--n-feat sets the width of the paper preset; add --preset paper", field="--n-feat")
        if n_feat < 6:
            raise InputError(f"expected n_feat >= 6, got {n_feat}", field="--n-feat")
        overrides["n_feat"] = int(n_feat)
    if widths is not None:
        if preset != "default":
            raise InputError("--widths sets the widths of the default preset (the paper preset uses --n-feat)", field="--widths")
        try:
            values = [int(w) for w in widths.split(",")]
        except ValueError:
            raise InputError(f"expected comma-separated integers, got {widths!r}", field="--widths") from None
        if not values or any(w < 8 or w % 8 for w in values):
            raise InputError(f"expected positive multiples of 8 (the GroupNorm groups), got {widths!r}", field="--widths")
        overrides["block_out_channels"] = values
    return overrides
