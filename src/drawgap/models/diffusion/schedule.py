"""The paper's noise schedule and its ancestral sampler, as a diffusers-style scheduler (SPEC.md 2.1, 8).

The schedule of [DAA] `ddpm.py` has quirks that a stock `DDPMScheduler` does not reproduce, hence this
small class:

- beta_t = beta_1 + (beta_2 - beta_1) t / T for t = 0..T: **T + 1 entries**, beta_0 = 1e-4 included;
- alphabar_t = exp(sum_{s=0..t} log(1 - beta_s)): the product **includes s = 0**;
- training draws t ~ randint(1, T), so t in {1..T-1}; sampling starts at x_T ~ N(0, I), steps i = T..1,
  x_{i-1} = (x_i - eps (1 - alpha_i) / sqrt(1 - alphabar_i)) / sqrt(alpha_i) + sqrt(beta_i) z, z = 0 at i = 1;
- data stay in {0, 1} (not rescaled to [-1, 1]) and samples are not clipped.

diffusers' own schedulers (DDIM, DPM-Solver++) reproduce this schedule exactly when built with
`num_train_timesteps = T + 1` and `trained_betas = betas`: their index i is then the paper's t = i and their
`alphas_cumprod[i]` is the paper's alphabar_i (`diffusers_kwargs`, checked in the tests).

Being a `ConfigMixin`, the scheduler saves and reloads its config (`save_config` / `from_config`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor


@dataclass
class PaperSchedulerOutput(BaseOutput):
    prev_sample: torch.Tensor


class PaperLinearScheduler(SchedulerMixin, ConfigMixin):
    """Linear beta schedule with T + 1 entries and ancestral sampling, exactly as in [DAA]."""

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 500, beta_start: float = 1e-4, beta_end: float = 0.02):
        T = int(num_train_timesteps)
        if T < 2:
            raise ValueError(f"num_train_timesteps must be at least 2, got {T}")
        t = torch.arange(T + 1, dtype=torch.float64)
        self.betas = beta_start + (beta_end - beta_start) * t / T
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.exp(torch.cumsum(torch.log(self.alphas), dim=0))
        self.init_noise_sigma = 1.0
        self.num_inference_steps = T
        self.timesteps = torch.arange(T, 0, -1)

    # ------------------------------------------------------------------------------------- training

    def sample_training_timesteps(self, batch: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """t ~ randint(1, T): integers 1..T-1, as [DAA] trains (t = T itself is never seen)."""
        return torch.randint(1, self.config.num_train_timesteps, (batch,), device=device, generator=generator)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) eps."""
        abar = self.alphas_cumprod.to(original_samples.device)[timesteps.long()].to(original_samples.dtype)
        abar = abar.view(-1, *([1] * (original_samples.dim() - 1)))
        return abar.sqrt() * original_samples + (1.0 - abar).sqrt() * noise

    # ------------------------------------------------------------------------------------- sampling

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None) -> None:
        """Ancestral sampling visits every step T..1; any other count is an error (use DDIM or DPM-Solver++)."""
        T = self.config.num_train_timesteps
        if num_inference_steps is not None and int(num_inference_steps) != T:
            raise ValueError(f"ancestral sampling runs all T = {T} steps, got {num_inference_steps}; use ddim or dpm++ for fewer")
        self.num_inference_steps = T
        self.timesteps = torch.arange(T, 0, -1, device=device)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> PaperSchedulerOutput | tuple:
        """One ancestral step x_i -> x_{i-1} from the predicted noise (SPEC.md 2.1)."""
        i = int(timestep)
        beta, alpha, abar = (float(v[i]) for v in (self.betas, self.alphas, self.alphas_cumprod))
        mean = (sample - model_output * ((1.0 - alpha) / np.sqrt(1.0 - abar))) / np.sqrt(alpha)
        if i > 1:
            z = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            mean = mean + np.sqrt(beta) * z
        return PaperSchedulerOutput(prev_sample=mean) if return_dict else (mean,)

    # ------------------------------------------------------------------------------ other schedulers

    def diffusers_kwargs(self) -> dict:
        """Arguments that make a diffusers scheduler use this exact schedule (index i = paper's t = i)."""
        return {
            "num_train_timesteps": self.config.num_train_timesteps + 1,
            "trained_betas": self.betas.numpy().astype(np.float64),
            "prediction_type": "epsilon",
        }

    def __len__(self) -> int:
        return self.config.num_train_timesteps
