"""drawgap's default denoiser: a small diffusers `UNet2DModel` with the exemplar stacked as an input channel.

Same interface as `PaperUNet`: forward(x, t, context=None) -> eps, x = [noisy, exemplar] channels, t the
integer timesteps. The default preset (widths 24-48-64 at 48/24/12 px, one ResNet block per level, no
self-attention, `denoisers.PRESETS["default"]`) was chosen by measurement on the strokes dataset (48x48,
CFGDM, batch 32, Adam 3e-4, 150 CPU-seconds of training each on one thread; held-out eps-MSE on 256 test
pairs x t in {25, 100, 250, 400}; sampling = CPU-seconds per drawing, DPM-Solver++ 20 steps with guidance,
from the forward cost at batch 64):

    widths      attention             params   steps  held-out MSE  sampling s/drawing
    32-64-64    12 px level + middle   1.11 M     96      0.0673          0.83
    32-64-64    none                   1.05 M    108      0.0651          0.67
    24-48-64    none  (default)        0.81 M    137      0.0720          0.57
    16-32-64    12 px level + middle   0.69 M    187      0.0792          0.37
    32-64-128   12 px level + middle   2.74 M     66      0.0782          1.06

(one run each on a shared machine: differences under ~10 % are noise). Attention brought nothing at this
budget (the same loss per step) for 20 % more time, and doubling the last width was slower for no gain.
32-64-64 learns best per training second; 24-48-64 samples 1.2-1.5x faster for a slightly higher loss.
The default is 24-48-64 because on a CPU sampling the evaluation costs more than the training (60 classes
x 20 drawings x 4 guidance values = 4,800 drawings, about 45 CPU-minutes, against a 15-minute training) and
it brings the default to about 120x the paper configuration's speed at batch 32 (32-64-64: about 85x;
`benchmarks/bench_sampling.py`). `drawgap train --widths 32,64,64` selects the other.

FSDM (`context_dim` set): the set context is added to the time embedding through UNet2DModel's "identity"
class embedding, and the ResNet blocks use `scale_shift` time conditioning, so each block applies a
per-channel scale and shift computed from time + context: FiLM, as in Giannone et al.'s FSDM.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from torch import nn


class LeanUNet(nn.Module):
    def __init__(
        self,
        image_size: int = 48,
        in_channels: int = 2,
        block_out_channels: tuple[int, ...] = (24, 48, 64),
        layers_per_block: int = 1,
        attention_levels: tuple[bool, ...] | None = None,
        mid_attention: bool = False,
        norm_num_groups: int = 8,
        attention_head_dim: int = 8,
        context_dim: int | None = None,
    ):
        super().__init__()
        levels = len(block_out_channels)
        if attention_levels is None:  # no self-attention (measured: no gain on 48x48 drawings, see above)
            attention_levels = (False,) * levels
        if len(attention_levels) != levels:
            raise ValueError(f"attention_levels needs {levels} entries, got {len(attention_levels)}")
        self.context_dim = context_dim
        self.unet = UNet2DModel(
            sample_size=image_size,
            in_channels=in_channels,
            out_channels=1,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels)),
            add_attention=mid_attention,
            norm_num_groups=norm_num_groups,
            attention_head_dim=attention_head_dim,
            time_embedding_dim=context_dim,
            class_embed_type="identity" if context_dim else None,
            resnet_time_scale_shift="scale_shift" if context_dim else "default",
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x, t, class_labels=context).sample
