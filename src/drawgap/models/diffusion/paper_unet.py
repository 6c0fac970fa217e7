"""The ICML denoiser `Unet_V2_Omniglot`, re-implemented from its description (SPEC.md 2.1).

A lucidrains-style ConvNeXt U-Net:

- input: noisy image and exemplar stacked as 2 channels; init conv 7x7 to init_dim = (n_feat // 3) * 2;
- widths [init_dim, n_feat, 2 n_feat, 4 n_feat]: n_feat 48 -> [32, 48, 96, 192], 60 -> [40, 60, 120, 240];
- time: t / T in (0, 1] -> sinusoidal embedding of n_feat dims -> Linear -> GELU -> Linear (4 n_feat);
- down: 3 levels of ConvNeXt, ConvNeXt, linear attention, saving a skip, then a stride-2 4x4 conv
  (identity at the last level); middle: ConvNeXt, full softmax attention, ConvNeXt;
- up: 2 levels that concatenate a skip, ConvNeXt, ConvNeXt, linear attention, transposed conv x2; the skip
  of the first (full-resolution) level is never used, as in [DAA];
- output: a ConvNeXt block without time input, then a 1x1 conv to the noise estimate.

8,488,721 parameters at n_feat 48 and 13,123,221 at n_feat 60 (tested).

FSDM adds one thing when `context_dim` is set: each ConvNeXt block that takes time also gets a FiLM layer
(a per-channel scale and shift computed from the set context). Without it the network is the paper's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SinusoidalEmbedding(nn.Module):
    """[sin, cos] of t * exp(-log(10000) k / (half - 1)), k < half = dim / 2 ([DAA] convention)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ConvNextBlock(nn.Module):
    """Depthwise 7x7 conv, + time shift (+ FiLM), GroupNorm, 3x3 conv to 2x width, GELU, GroupNorm, 3x3 conv."""

    def __init__(self, dim: int, dim_out: int, time_dim: int | None = None, context_dim: int | None = None, mult: int = 2):
        super().__init__()
        self.time_mlp = nn.Sequential(nn.GELU(), nn.Linear(time_dim, dim)) if time_dim else None
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(context_dim, 2 * dim)) if (context_dim and time_dim) else None
        self.ds_conv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.net = nn.Sequential(
            nn.GroupNorm(1, dim),
            nn.Conv2d(dim, dim_out * mult, 3, padding=1),
            nn.GELU(),
            nn.GroupNorm(1, dim_out * mult),
            nn.Conv2d(dim_out * mult, dim_out, 3, padding=1),
        )
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ds_conv(x)
        if self.time_mlp is not None and time_emb is not None:
            h = h + self.time_mlp(time_emb)[:, :, None, None]
        if self.film is not None and context is not None:
            scale, shift = self.film(context)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return self.net(h) + self.res_conv(x)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, heads*d, H, W] -> [B, heads, d, H*W]."""
    b, c, h, w = x.shape
    return x.reshape(b, heads, c // heads, h * w)


class Attention(nn.Module):
    """Full softmax self-attention over positions (used at the lowest resolution)."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads = heads
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (_heads(t, self.heads).transpose(-1, -2) for t in self.to_qkv(x).chunk(3, dim=1))  # [B, h, N, d]
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return self.to_out(out.transpose(-1, -2).reshape(b, -1, h, w))


class LinearAttention(nn.Module):
    """Linear attention (softmax over features for q, over positions for k), then 1x1 conv and GroupNorm."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), nn.GroupNorm(1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=1))  # [B, h, d, N]
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        return self.to_out(out.reshape(b, -1, h, w))


class PreNormResidual(nn.Module):
    """x + fn(GroupNorm(1)(x))."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.GroupNorm(1, dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(self.norm(x))


class PaperUNet(nn.Module):
    """eps_theta(x_t, t, exemplar) of [DAA]; forward(x, t, context=None) with x = [noisy, exemplar] channels.

    t: integer timesteps [B] (the model sees t / T); context: [B, context_dim] (FSDM only).
    """

    def __init__(
        self,
        in_channels: int = 2,
        n_feat: int = 48,
        dim_mults: tuple[int, ...] = (1, 2, 4),
        attn_heads: int = 4,
        attn_dim_head: int = 32,
        num_train_timesteps: int = 500,
        context_dim: int | None = None,
    ):
        super().__init__()
        self.num_train_timesteps = num_train_timesteps
        self.context_dim = context_dim
        init_dim = (n_feat // 3) * 2
        dims = [init_dim, *(n_feat * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        time_dim = 4 * n_feat
        attn = dict(heads=attn_heads, dim_head=attn_dim_head)

        def block(a: int, b: int) -> ConvNextBlock:
            return ConvNextBlock(a, b, time_dim=time_dim, context_dim=context_dim)

        self.init_conv = nn.Conv2d(in_channels, init_dim, 7, padding=3)
        self.time_mlp = nn.Sequential(
            SinusoidalEmbedding(n_feat), nn.Linear(n_feat, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim)
        )
        self.downs = nn.ModuleList()
        for i, (a, b) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.downs.append(nn.ModuleList([
                block(a, b),
                block(b, b),
                PreNormResidual(b, LinearAttention(b, **attn)),
                nn.Identity() if last else nn.Conv2d(b, b, 4, stride=2, padding=1),
            ]))
        mid = dims[-1]
        self.mid_block1 = block(mid, mid)
        self.mid_attn = PreNormResidual(mid, Attention(mid, **attn))
        self.mid_block2 = block(mid, mid)
        # [DAA] builds the up path over in_out[1:] only: the full-resolution skip is never consumed
        self.ups = nn.ModuleList()
        for a, b in reversed(in_out[1:]):
            self.ups.append(nn.ModuleList([
                block(2 * b, a),
                block(a, a),
                PreNormResidual(a, LinearAttention(a, **attn)),
                nn.ConvTranspose2d(a, a, 4, stride=2, padding=1),
            ]))
        self.final_block = ConvNextBlock(n_feat, n_feat)
        self.final_conv = nn.Conv2d(n_feat, 1, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        temb = self.time_mlp(t.float() / self.num_train_timesteps)
        x = self.init_conv(x)
        skips = []
        for block1, block2, attn, down in self.downs:
            x = attn(block2(block1(x, temb, context), temb, context))
            skips.append(x)
            x = down(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, temb, context)), temb, context)
        for block1, block2, attn, up in self.ups:
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(attn(block2(block1(x, temb, context), temb, context)))
        return self.final_conv(self.final_block(x))
