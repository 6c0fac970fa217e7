"""Classifier-free guidance with the paper's convention (SPEC.md 2.2).

    eps = (1 + g) * eps(x_t, c) - g * eps(x_t, null)

g = 0 is the conditional model alone (the paper's "DDPM" end of the sweep), g = 1 the paper's "CFGDM".
The null condition is the all-zeros exemplar, the one the model saw when training dropped the condition.

Other libraries write guidance as eps_uncond + s (eps_cond - eps_uncond); that is the same formula with
s = g + 1. So diffusers' `guidance_scale` = g + 1 (`guidance_scale_from_g`), and the paper's g = 2 is
diffusers' guidance_scale = 3.
"""

from __future__ import annotations

from typing import Callable

import torch


def guidance_scale_from_g(g: float) -> float:
    """diffusers' `guidance_scale` for the paper's g."""
    return g + 1.0


def g_from_guidance_scale(scale: float) -> float:
    """The paper's g for diffusers' `guidance_scale`."""
    return scale - 1.0


def combine(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, g: float) -> torch.Tensor:
    """(1 + g) eps_cond - g eps_uncond."""
    return (1.0 + g) * eps_cond - g * eps_uncond


def null_condition(cond: torch.Tensor) -> torch.Tensor:
    """The dropped condition: an all-zeros exemplar (no ink)."""
    return torch.zeros_like(cond)


def noise_pair(
    denoise: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x_t: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    g: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(eps_cond, eps_uncond), the two passes run as one doubled batch; the sampling loop combines them
    (`samplers.sample_loop`). denoise(x_t, t, cond) -> eps. With g = 0 the unconditional pass would be
    multiplied by zero, so it is skipped (eps_uncond None: same result, half the cost)."""
    if g == 0:
        return denoise(x_t, t, cond), None
    eps = denoise(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, null_condition(cond)]))
    eps_cond, eps_uncond = eps.chunk(2)
    return eps_cond, eps_uncond


def guided_noise(
    denoise: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x_t: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    g: float,
) -> torch.Tensor:
    """Guided noise prediction (1 + g) eps_cond - g eps_uncond, from `noise_pair`."""
    eps_cond, eps_uncond = noise_pair(denoise, x_t, t, cond, g)
    return eps_cond if eps_uncond is None else combine(eps_cond, eps_uncond, g)
