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
(`channels_last`: about 1.2x faster on a CPU, the same drawings up to float rounding); training stays NCHW.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from drawgap.errors import InputError
from drawgap.models.base import Generator, item_seeds
from drawgap.models.diffusion.denoisers import build_denoiser
from drawgap.models.diffusion.guidance import guided_noise
from drawgap.models.diffusion.samplers import sample_in_batches
from drawgap.models.diffusion.schedule import PaperLinearScheduler


@contextmanager
def channels_last(network: torch.nn.Module):
    """Inside the block, the network's convolution weights are laid out channels-last (NHWC); after it,
    contiguous again (safetensors saves contiguous tensors only, and training stays NCHW).

    Why: oneDNN's CPU convolutions work on NHWC directly. With NCHW tensors every convolution reorders its
    input, output and weights to a blocked layout and pads the channels to blocks of 16 (the lean
    denoiser's 24 become 32). Same values up to float rounding (~1e-6). Measured at 48 px, one thread, CPU
    ms per network call, NCHW -> NHWC input -> NHWC input and weights (a loaded machine, best of 25 / 4):
    lean denoiser 29.9 -> 25.6 -> 24.3 at batch 2 (one guided drawing), 820 -> 797 -> 708 at batch 64;
    paper denoiser 102 -> 105 -> 105 at batch 2 (within the noise), 4205 -> 3699 -> 3690 at batch 64.
    The sampling path (`guided_noise`) feeds NHWC input; `sample` also converts the weights here.
    """
    network.to(memory_format=torch.channels_last)
    try:
        yield network
    finally:
        network.to(memory_format=torch.contiguous_format)


def sample_per_exemplar(
    model: Generator,
    noise_for: Callable[[slice], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
    n_classes: int,
    n: int,
    seed: int | None,
    sampler: str,
    steps: int | None,
    batch_size: int,
    progress: bool,
) -> torch.Tensor:
    """[C, n, 1, S, S] drawings of a diffusion generator, drawing (c, k) from the seed of (seed, c, k).

    noise_for(chunk) gives the noise prediction for the drawings `chunk` of the flattened [C * n] list; it
    should feed its network channels-last input. The model samples in eval mode with its `denoiser`
    channels-last (see `channels_last`), and goes back to its mode and layout afterwards.
    """
    seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
    size = model.image_size
    was_training = model.training
    model.eval()
    try:
        with channels_last(model.denoiser):
            x = sample_in_batches(
                noise_for, item_seeds(seed, n_classes, n).reshape(-1), sampler, model.schedule, steps, size, batch_size,
                device=model.device, progress=progress,
            )
    finally:
        model.train(was_training)
    return x.view(n_classes, n, 1, size, size)


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


class ExemplarDiffusion(Generator):
    """A diffusion model conditioned on one exemplar, stacked as an input channel."""

    name = "cfgdm"
    class_keys = ("images", "exemplars")
    default_guidance = 1.0  # the paper's "CFGDM"

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

    @torch.no_grad()
    def sample(
        self,
        exemplars,
        n: int,
        *,
        seed: int | None = None,
        guidance: float | None = None,
        sampler: str = "ancestral",
        steps: int | None = None,
        batch_size: int = 64,
        progress: bool = False,
    ) -> torch.Tensor:
        """[C, n, 1, H, W] drawings in [0, 1]; drawing (c, k) depends only on (seed, c, k) and the options.

        guidance: the paper's g (default 1.0 for cfgdm, 0 for ddpm); sampler: ancestral | ddim | dpm++;
        steps: sampler steps (ancestral: always T; fast samplers: default 20); batch_size: drawings per
        network call (guidance doubles the batch internally).
        """
        if n < 1:
            raise InputError(f"expected n >= 1 drawings per exemplar, got {n}", field="n")
        cond = self.check_exemplars(exemplars)
        g = self._check_guidance(self.default_guidance if guidance is None else guidance)
        cond_per_item = cond.repeat_interleave(n, dim=0)

        def noise_for(chunk: slice):
            c = cond_per_item[chunk]
            return lambda x_t, t: self.guided_noise(x_t, t, c, g)

        return sample_per_exemplar(self, noise_for, len(cond), n, seed, sampler, steps, batch_size, progress)


class DDPM(ExemplarDiffusion):
    """Exemplar-conditioned DDPM: the condition is never dropped, no guidance (SPEC.md 2.1)."""

    name = "ddpm"
    default_guidance = 0.0

    def __init__(self, image_size: int = 48, preset: str = "default", denoiser: dict | None = None, cond_drop_prob: float = 0.0, **schedule):
        if cond_drop_prob != 0.0:
            raise ValueError("ddpm never drops the condition (cond_drop_prob must be 0); use cfgdm")
        super().__init__(image_size, preset, denoiser, 0.0, **schedule)


class CFGDM(ExemplarDiffusion):
    """Classifier-free guided diffusion: condition dropped with p = 0.1 in training (SPEC.md 2.2)."""

    name = "cfgdm"

