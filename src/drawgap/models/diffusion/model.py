"""Exemplar-conditioned diffusion: `ddpm` and `cfgdm` (SPEC.md 2.1, 2.2).

The exemplar is stacked as a second input channel of the denoiser. Training (`forward`) follows [DAA]:
t ~ randint(1, T), x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) eps on {0, 1} data, loss = MSE
between eps and its prediction. `cfgdm` drops the condition of each training item with probability 0.1,
replacing the exemplar with the all-zeros null condition (drawgap uses +c for kept items; [DAA]'s -c is
an equivalent sign convention, SPEC.md 2.2); `ddpm` never drops it and so cannot be guided.

Sampling: `sample(exemplars, n, seed=, guidance=, sampler=, steps=, batch_size=)`; guidance g follows the
paper, eps = (1 + g) eps_cond - g eps_null (diffusers' guidance_scale = g + 1, see `guidance.py`). The
sampler output is continuous and unclipped during the loop, as in [DAA]; the returned drawings are clamped
to [0, 1] (the critics binarise them anyway). Sampling runs the network in channels-last layout
(`channels_last`: about 1.2x faster on a CPU, the same drawings up to float rounding); training stays NCHW
(channels-last trains slower in bf16 on the CPU, see `channels_last`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from drawgap.errors import InputError
from drawgap.models.diffusion.denoisers import build_denoiser
from drawgap.models.diffusion.family import DiffusionFamily, channels_last  # noqa: F401  (channels_last: public here before)
from drawgap.models.diffusion.guidance import guided_noise, noise_pair
from drawgap.models.diffusion.schedule import PaperLinearScheduler


class PairSet(torch.utils.data.Dataset):
    """Training pairs (drawing, exemplar of its class) of a drawgap `Dataset`, as float [1, H, W] in [0, 1]."""

    def __init__(self, dataset):
        self.images = torch.from_numpy(dataset.images).float().div_(255.0).unsqueeze(1)
        exemplar_of_class = torch.from_numpy(dataset.exemplars)
        self.exemplar_index = exemplar_of_class[torch.from_numpy(dataset.labels)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"images": self.images[i], "exemplars": self.images[self.exemplar_index[i]]}


class ExemplarDiffusion(DiffusionFamily):
    """A diffusion model conditioned on one exemplar, stacked as an input channel."""

    class_keys = ("images", "exemplars")
    default_guidance = 1.0  # the paper's "CFGDM"
    sampling_defaults = {**DiffusionFamily.sampling_defaults, "guidance": default_guidance}

    def __init__(
        self,
        image_size: int = 48,
        preset: str = "default",
        denoiser: dict | None = None,
        cond_drop_prob: float = 0.1,
        num_train_timesteps: int = 500,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ):
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1), got {cond_drop_prob}")
        super().__init__(
            image_size=image_size,
            preset=preset,
            denoiser=dict(denoiser or {}),
            cond_drop_prob=cond_drop_prob,
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
        )
        self.schedule = PaperLinearScheduler(
            num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end
        )
        self.denoiser = build_denoiser(
            preset, image_size, in_channels=2, num_train_timesteps=num_train_timesteps, **(denoiser or {})
        )

    @property
    def cond_drop_prob(self) -> float:
        return float(self.config["cond_drop_prob"])

    # -------------------------------------------------------------------------------------- noise

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, exemplars: torch.Tensor) -> torch.Tensor:
        """eps_theta(x_t, t, c) with c the exemplars [B, 1, H, W] (all zeros = the null condition)."""
        return self.denoiser(torch.cat([x_t, exemplars], dim=1), t)

    def guided_noise(self, x_t: torch.Tensor, t: torch.Tensor, exemplars: torch.Tensor, guidance: float) -> torch.Tensor:
        """(1 + g) eps(x_t, c) - g eps(x_t, null), the two passes as one batch (the sampling path)."""
        return guided_noise(self._sampling_noise, x_t, t, exemplars, guidance)

    def _sampling_noise(self, x_t: torch.Tensor, t: torch.Tensor, exemplars: torch.Tensor) -> torch.Tensor:
        """predict_noise with the network input laid out channels-last (see `channels_last`)."""
        x = torch.cat([x_t, exemplars], dim=1).contiguous(memory_format=torch.channels_last)
        return self.denoiser(x, t)

    # -------------------------------------------------------------------------------------- training

    def training_set(self, dataset, seed: int = 0) -> torch.utils.data.Dataset:
        return PairSet(dataset)

    def forward(self, batch: dict) -> torch.Tensor:
        x0, cond = batch["images"], batch["exemplars"]
        t = self.schedule.sample_training_timesteps(len(x0), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.schedule.add_noise(x0, noise, t)
        if self.cond_drop_prob > 0:
            keep = (torch.rand(len(x0), device=x0.device) >= self.cond_drop_prob).to(cond.dtype)
            cond = cond * keep[:, None, None, None]  # dropped items get the all-zeros null condition
        return F.mse_loss(self.predict_noise(x_t, t, cond), noise)

    # -------------------------------------------------------------------------------------- sampling

    def _check_guidance(self, guidance: float) -> float:
        try:
            g = float(guidance)
        except (TypeError, ValueError):
            raise InputError(f"expected a number, got {guidance!r}", field="guidance") from None
        if not np.isfinite(g) or g < 0:
            raise InputError(f"expected a finite number >= 0, got {guidance!r}", field="guidance")
        if g != 0 and self.cond_drop_prob == 0:
            raise InputError(
                f"{self.name} was trained without dropping the condition, so it has no unconditional model to "
                "guide with; use guidance 0 or train a cfgdm",
                field="guidance",
            )
        return g

    def noise_for(self, cond: torch.Tensor, n: int, options: dict):
        cond_per_item = cond.repeat_interleave(n, dim=0)
        g = options["guidance"]

        def noise_for(chunk: slice):  # (eps_cond, eps_uncond): the sampling loop combines them with g
            c = cond_per_item[chunk]
            return lambda x_t, t: noise_pair(self._sampling_noise, x_t, t, c, g)

        return noise_for


class DDPM(ExemplarDiffusion):
    """Exemplar-conditioned DDPM: the condition is never dropped, no guidance (SPEC.md 2.1)."""

    name = "ddpm"
    display_name = "DDPM"
    default_guidance = 0.0
    sampling_defaults = {**DiffusionFamily.sampling_defaults, "guidance": default_guidance}

    def __init__(self, image_size: int = 48, preset: str = "default", denoiser: dict | None = None, cond_drop_prob: float = 0.0, **schedule):
        if cond_drop_prob != 0.0:
            raise ValueError("ddpm never drops the condition (cond_drop_prob must be 0); use cfgdm")
        super().__init__(image_size, preset, denoiser, 0.0, **schedule)


class CFGDM(ExemplarDiffusion):
    """Classifier-free guided diffusion: condition dropped with p = 0.1 in training (SPEC.md 2.2)."""

    name = "cfgdm"
    display_name = "CFGDM"

