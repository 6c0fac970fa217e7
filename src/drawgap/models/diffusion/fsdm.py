"""FSDM: the few-shot diffusion model of Giannone, Nielsen & Winther (2022), adapted as in the ICML study
(SPEC.md 2.3): trained on class-homogeneous sets, conditioned on the single exemplar at test time.

- **Set encoder.** A small conv net embeds each drawing of a set; the embeddings are mean-pooled (the
  "mean" pooling of [FSDM]) and passed through an MLP into one context vector per set. Mean pooling takes
  sets of any size, so the same encoder reads a set of `set_size` drawings in training and the single
  exemplar (a set of size 1) at test time. A conv encoder rather than [FSDM]'s ViT: at 48x48 and with
  a CPU budget it trains faster for the same role (documented choice; the ICML adaptation is unknown).
- **Conditioning.** The context enters the denoiser only through FiLM (a per-channel scale and shift in
  every residual block, see `paper_unet.py` / `lean_unet.py`). The exemplar is *not* stacked as an input
  channel: conditioning through a set-level vector is what distinguishes FSDM from the pixel-aligned
  DDPM/CFGDM conditioning.
- **Training.** Each item is a set of `set_size` drawings of one class (the set of [FSDM]: every member is
  a denoising target conditioned on the context of the whole set). `--batch-size` counts sets, so a step
  denoises batch_size x set_size drawings. No condition dropping, hence no guidance.
- Schedule, loss and samplers are those of DDPM/CFGDM (SPEC.md 2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from drawgap.models.diffusion.denoisers import build_denoiser
from drawgap.models.diffusion.family import DiffusionFamily, DiffusionOptions
from drawgap.models.diffusion.schedule import PaperLinearScheduler
from drawgap.options import option


@dataclass
class FSDMOptions(DiffusionOptions):
    set_size: int = option(5, "Drawings per class-homogeneous training set.", model=True)


class SetEncoder(nn.Module):
    """[B, K, 1, H, W] sets -> [B, context_dim]: per-drawing conv embedding, mean over the set, MLP."""

    def __init__(self, context_dim: int, widths: tuple[int, ...] = (32, 64, 64)):
        super().__init__()
        layers, c_in = [], 1
        for i, c in enumerate(widths):
            layers += [nn.Conv2d(c_in, c, 3, stride=1 if i == 0 else 2, padding=1), nn.GroupNorm(1, c), nn.GELU()]
            c_in = c
        self.per_drawing = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, context_dim))
        self.pooled = nn.Sequential(nn.GELU(), nn.Linear(context_dim, context_dim), nn.GELU(), nn.Linear(context_dim, context_dim))

    def forward(self, sets: torch.Tensor) -> torch.Tensor:
        b, k = sets.shape[:2]
        per = self.per_drawing(sets.flatten(0, 1)).view(b, k, -1)
        return self.pooled(per.mean(dim=1))


class ClassSets(torch.utils.data.Dataset):
    """Item i: a set of `set_size` drawings of the class of drawing i, drawing i first; the other members
    are drawn without replacement from its class (with replacement when the class is too small), from a
    generator seeded by (seed, epoch, i), so the sets are reproducible and change every epoch."""

    def __init__(self, dataset, set_size: int, seed: int = 0):
        self.images = torch.from_numpy(dataset.images).float().div_(255.0).unsqueeze(1)
        self.labels = dataset.labels
        self.members = [np.flatnonzero(dataset.labels == c) for c in range(dataset.n_classes)]
        self.set_size, self.seed, self.epoch = set_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        others = self.members[self.labels[i]]
        others = others[others != i]
        k = self.set_size - 1
        pick = rng.choice(others, size=k, replace=len(others) < k) if k and len(others) else np.full(k, i)
        return {"sets": self.images[np.concatenate([[i], pick]).astype(np.int64)]}


class FSDM(DiffusionFamily):
    """Few-shot diffusion: a set context, FiLM-injected, conditions the denoiser. No guidance: it never
    drops its condition, so it has no unconditional model to guide with."""

    name = "fsdm"
    display_name = "FSDM"
    class_keys = ("sets",)
    Options = FSDMOptions

    def __init__(
        self,
        image_size: int = 48,
        preset: str = "default",
        denoiser: dict | None = None,
        set_size: int = 5,
        context_dim: int = 128,
        encoder_widths: tuple[int, ...] = (32, 64, 64),
        num_train_timesteps: int = 500,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ):
        if set_size < 1:
            raise ValueError(f"set_size must be >= 1, got {set_size}")
        super().__init__(
            image_size=image_size,
            preset=preset,
            denoiser=dict(denoiser or {}),
            set_size=set_size,
            context_dim=context_dim,
            encoder_widths=list(encoder_widths),
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
        )
        self.schedule = PaperLinearScheduler(
            num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end
        )
        self.encoder = SetEncoder(context_dim, tuple(encoder_widths))
        self.denoiser = build_denoiser(
            preset, image_size, in_channels=1, context_dim=context_dim, num_train_timesteps=num_train_timesteps,
            **(denoiser or {}),
        )

    def context(self, sets: torch.Tensor) -> torch.Tensor:
        """[B, K, 1, H, W] class-homogeneous sets (K = 1: one exemplar) -> [B, context_dim]."""
        return self.encoder(sets)

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.denoiser(x_t, t, context)

    # -------------------------------------------------------------------------------------- training

    def training_set(self, dataset, seed: int = 0) -> torch.utils.data.Dataset:
        return ClassSets(dataset, self.config["set_size"], seed)

    def forward(self, batch: dict) -> torch.Tensor:
        sets = batch["sets"]  # [B, K, 1, H, W]; NCHW once flattened (channels-last trains slower in bf16, see `channels_last`)
        k = sets.shape[1]
        ctx = self.context(sets).repeat_interleave(k, dim=0)
        x0 = sets.flatten(0, 1)
        t = self.schedule.sample_training_timesteps(len(x0), device=x0.device)
        noise = torch.randn_like(x0)
        return F.mse_loss(self.predict_noise(self.schedule.add_noise(x0, noise, t), t, ctx), noise)

    # -------------------------------------------------------------------------------------- sampling

    def noise_for(self, cond: torch.Tensor, n: int, options: dict):
        was_training = self.training
        self.eval()  # the context in inference mode, as the denoiser samples in
        try:
            ctx = self.context(cond.unsqueeze(1)).repeat_interleave(n, dim=0)
        finally:
            self.train(was_training)

        def noise_for(chunk: slice):
            c = ctx[chunk]
            return lambda x_t, t: self.predict_noise(x_t.contiguous(memory_format=torch.channels_last), t, c)

        return noise_for
