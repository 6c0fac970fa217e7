"""Sobol attribution (Fel, Cadene, Chalvidal, Cord, Vigouroux & Serre, NeurIPS 2021): the importance of an
image region is its total-order Sobol index, the share of the score's variance it explains, alone or in
interaction with other regions, when regions are randomly dimmed.

captum has no Sobol method, so it is written here with captum's interface: `SobolAttribution(forward_func)
.attribute(inputs, target=...)`. As in the authors' code:
- the image is cut in a `grid` x `grid` set of cells (8 x 8), one variable per cell;
- quasi-Monte Carlo designs: a Sobol sequence (scipy.stats.qmc.Sobol) of dimension 2d gives the matrices
  A and B [n_design, d]; C_i is A with column i taken from B, so n_design (d + 2) forward passes;
- each design is a coarse mask in [0, 1], upsampled by nearest neighbour (each cell stays one variable)
  and applied by "inpainting" towards a zero baseline: `inputs * mask` (ink high, so dimmed ink fades into
  the background);
- Jansen's estimator: ST_i = sum_j (f(A_j) - f(C_ij))^2 / (2 n_design Var f(A)), Var with ddof 1;
- the grid of indices is upsampled bilinearly to the image (non-negative, unlike cubic).
`seed` scrambles the sequence (Owen scrambling) when given; `seed=None` is the authors' unscrambled one.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import qmc

from drawgap.errors import InputError
from drawgap.importance.rise import _targets


def sobol_designs(dim: int, n_design: int, seed: int | None = None) -> np.ndarray:
    """[n_design (dim + 2), dim] masks in [0, 1]: A, then B, then C_1 .. C_dim (the replicated designs)."""
    if n_design < 2 or n_design & (n_design - 1):
        raise InputError(f"expected n_design a power of two >= 2 (a balanced Sobol sequence), got {n_design}", field="n_design")
    sampler = qmc.Sobol(2 * dim, scramble=seed is not None, seed=seed)
    ab = sampler.random(n_design)
    a, b = ab[:, :dim], ab[:, dim:]
    c = np.repeat(a[None], dim, axis=0)  # [dim, n_design, dim]
    idx = np.arange(dim)
    c[idx, :, idx] = b.T
    return np.concatenate([a, b, c.reshape(-1, dim)])


def jansen_total_order(outputs: np.ndarray, n_design: int, dim: int) -> np.ndarray:
    """[dim] total-order indices from the outputs of the designs of `sobol_designs` (in that order).
    A score that does not vary gives zeros (nothing explains a variance of zero)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    a = outputs[:n_design]
    c = outputs[2 * n_design:].reshape(dim, n_design)
    var = a.var(ddof=1)
    if not var > 0:
        return np.zeros(dim)
    return ((a[None] - c) ** 2).sum(axis=1) / (2 * n_design * var)


class SobolAttribution:
    """SobolAttribution(forward_func): forward_func maps [B, 1, H, W] to scores [B, K]."""

    def __init__(self, forward_func: Callable[[torch.Tensor], torch.Tensor]):
        self.forward_func = forward_func

    @torch.no_grad()
    def attribute(self, inputs: torch.Tensor, target, grid: int = 8, n_design: int = 32, batch_size: int = 256,
                  seed: int | None = None) -> torch.Tensor:
        """[N, 1, H, W] total-order Sobol index of the cell holding each pixel (bilinearly smoothed)."""
        n, _, h, w = inputs.shape
        if grid < 1 or grid > min(h, w):
            raise InputError(f"expected a grid of 1..{min(h, w)} cells, got {grid}", field="grid")
        targets = _targets(target, n)
        dim = grid * grid
        coarse = torch.as_tensor(sobol_designs(dim, n_design, seed), dtype=inputs.dtype).reshape(-1, 1, grid, grid)
        masks = F.interpolate(coarse, size=(h, w), mode="nearest").to(inputs.device)
        out = torch.empty_like(inputs)
        for i in range(n):
            scores = torch.cat([
                self.forward_func(inputs[i: i + 1] * masks[s: s + batch_size])[:, targets[i]]
                for s in range(0, len(masks), batch_size)
            ]).double().cpu().numpy()
            sti = torch.as_tensor(jansen_total_order(scores, n_design, dim), dtype=inputs.dtype).reshape(1, 1, grid, grid)
            out[i] = F.interpolate(sti, size=(h, w), mode="bilinear", align_corners=False)[0].to(inputs.device)
        return out
