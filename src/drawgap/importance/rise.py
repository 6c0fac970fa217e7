"""RISE (Petsiuk, Das & Saenko, BMVC 2018): importance as the score-weighted average of random masks.

captum has no RISE, so it is written here with captum's interface: `RISE(forward_func).attribute(inputs,
target=...)`. Masks are coarse Bernoulli(p) grids of `grid` x `grid` cells, upsampled bilinearly to a
(grid + 1) x cell canvas and cropped at a random shift (the paper's smooth, shifted masks); a masked input is
`inputs * mask` (ink high, so a masked pixel becomes background).

One change from the paper, for variance: the score of each mask is centred by the mean score over masks
before weighting. In expectation this only subtracts a constant map, but it makes the map invariant to a
constant offset of the score (logits are negative distances for the ProtoNet critic) and less noisy.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from drawgap.errors import InputError


def rise_masks(n: int, size: int, grid: int = 6, p: float = 0.5, seed: int = 0) -> torch.Tensor:
    """[n, 1, size, size] smooth random masks in [0, 1] (Petsiuk et al.'s construction)."""
    if not 0 < p < 1:
        raise InputError(f"expected a keep probability in (0, 1), got {p}", field="p")
    if grid < 1 or grid > size:
        raise InputError(f"expected a grid of 1..{size} cells, got {grid}", field="grid")
    g = torch.Generator().manual_seed(int(seed))
    cell = math.ceil(size / grid)
    coarse = (torch.rand(n, 1, grid, grid, generator=g) < p).float()
    big = F.interpolate(coarse, size=((grid + 1) * cell,) * 2, mode="bilinear", align_corners=False)
    dx = torch.randint(0, cell, (n,), generator=g)
    dy = torch.randint(0, cell, (n,), generator=g)
    crops = torch.stack([big[i, :, dy[i]: dy[i] + size, dx[i]: dx[i] + size] for i in range(n)])
    return crops.clamp_(0.0, 1.0)  # interpolation rounding can overshoot 1 by an ulp


class RISE:
    """RISE(forward_func): forward_func maps [B, 1, H, W] to scores [B, K]."""

    def __init__(self, forward_func: Callable[[torch.Tensor], torch.Tensor]):
        self.forward_func = forward_func

    @torch.no_grad()
    def attribute(self, inputs: torch.Tensor, target, n_masks: int = 1000, grid: int = 6, p: float = 0.5,
                  batch_size: int = 250, seed: int = 0) -> torch.Tensor:
        """[N, 1, H, W] importance of each pixel for the score `target` (int or [N] ints) of each input."""
        n, _, h, w = inputs.shape
        if h != w:
            raise InputError(f"expected square inputs, got {h}x{w}", field="inputs")
        targets = _targets(target, n)
        masks = rise_masks(n_masks, h, grid, p, seed).to(inputs.device, inputs.dtype)
        out = torch.empty_like(inputs)
        for i in range(n):
            scores = torch.cat([
                self.forward_func(inputs[i: i + 1] * masks[s: s + batch_size])[:, targets[i]]
                for s in range(0, n_masks, batch_size)
            ])
            weights = scores - scores.mean()
            out[i] = torch.einsum("m,mchw->chw", weights, masks) / (n_masks * p)
        return out


def _targets(target, n: int) -> list[int]:
    if isinstance(target, int):
        return [target] * n
    t = torch.as_tensor(target).reshape(-1).tolist()
    if len(t) != n:
        raise InputError(f"expected one target per input ({n}), got {len(t)}", field="target")
    return [int(v) for v in t]
