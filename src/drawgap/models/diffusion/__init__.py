"""Diffusion generators: exemplar-conditioned DDPM and CFGDM, few-shot FSDM; the paper's schedule and
denoiser, a lean default denoiser, classifier-free guidance and fast samplers (SPEC.md 2.1-2.3)."""

from drawgap.models.diffusion.fsdm import FSDM
from drawgap.models.diffusion.guidance import g_from_guidance_scale, guidance_scale_from_g
from drawgap.models.diffusion.model import CFGDM, DDPM, ExemplarDiffusion
from drawgap.models.diffusion.samplers import SAMPLERS
from drawgap.models.diffusion.schedule import PaperLinearScheduler

__all__ = [
    "CFGDM",
    "DDPM",
    "ExemplarDiffusion",
    "FSDM",
    "PaperLinearScheduler",
    "SAMPLERS",
    "g_from_guidance_scale",
    "guidance_scale_from_g",
]
