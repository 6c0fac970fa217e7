"""The diffusion family: what DDPM, CFGDM and FSDM share as generators (SPEC.md 2.1): their `drawgap train`
options and optimiser, EMA, their sampling options and the sampling call around a per-family noise.

- Optimiser (SPEC.md 2.1): Adam, lr 1e-4, linear decay to 0 at the last step (the paper decays per epoch;
  per step is the same line without the stairs), no gradient clipping; `--lr-schedule constant` keeps it.
- EMA of the weights, saved as the run's generator (see `models/training.py`).
- Sampling options of `drawgap sample`: sampler (default dpm++), steps (the sampler's default) and, for the
  exemplar-conditioned models, guidance; each checked here, once, for `sample` and for `drawgap sample`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from drawgap.errors import InputError
from drawgap.models.base import Generator, Schedule, item_seeds
from drawgap.models.diffusion.denoisers import preset_overrides
from drawgap.models.diffusion.samplers import make_scheduler, sample_in_batches
from drawgap.options import model_fields, option


@dataclass
class DiffusionOptions:
    """`drawgap train ddpm | cfgdm` options (fsdm adds --set-size)."""

    preset: str = option("default", "Denoiser: default (lean UNet2DModel) or paper (the ICML ConvNeXt U-Net).", model=True)
    n_feat: int | None = option(None, "Paper preset width: 48 (Omniglot, the default) or 60 (QuickDraw-FS).", model=True)
    widths: str | None = option(None, "Default preset widths per level, e.g. 32,64,64 [24,48,64].", model=True)
    lr: float = option(1e-4, "Adam learning rate.")
    lr_schedule: str = option("linear", "linear (decay to 0 at the last step, SPEC.md 2.1) or constant.")

    def __post_init__(self):
        if not self.lr > 0:
            raise InputError(f"expected a positive learning rate, got {self.lr}", field="lr")
        if self.lr_schedule not in ("linear", "constant"):
            raise InputError(f"expected linear or constant, got {self.lr_schedule!r}", field="lr_schedule")


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

    Training stays NCHW, measured (`bench_training`'s step, batch 32, one thread, NCHW and channels-last
    copies of one model stepped alternately in one process, 4-8 rounds, malloc keeping freed memory):
    channels-last made the CFGDM step 1.11x faster in fp32 but 0.81x as fast in bf16, FSDM's (160 drawings a
    step) 1.03x and 0.83x. Its convolutions gain (FSDM bf16: 2.8 -> 2.1 s per step), but the CPU GroupNorm
    kernels lose more in channels-last (FSDM bf16: forward 0.07 -> 0.31 s, backward 0.07 -> 0.91 s), and the
    shipped recipes train in bf16. Nor does `torch.compile` of the denoiser pay on this CPU: 141 s to compile
    the CFGDM step, which then ran at 0.60 s against 0.59 s eager (bf16).
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
    guidance: float = 0.0,
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
                device=model.device, progress=progress, guidance=guidance,
            )
    finally:
        model.train(was_training)
    return x.view(n_classes, n, 1, size, size)




class DiffusionFamily(Generator):
    """A diffusion generator: `schedule` (the paper's), `denoiser`, and `noise_for` its conditioning."""

    Options = DiffusionOptions
    uses_ema = True
    sampling_defaults = {"sampler": "dpm++", "steps": None}

    @classmethod
    def config_from_options(cls, options, image_size: int) -> dict:
        denoiser = preset_overrides(options.preset, n_feat=options.n_feat, widths=options.widths)
        rest = sorted(model_fields(cls.Options) - {"preset", "n_feat", "widths"})
        return {"image_size": image_size, "preset": options.preset, "denoiser": denoiser,
                **{k: getattr(options, k) for k in rest}}

    def configure_optimizers(self, options, state):
        optimizer = torch.optim.Adam(self.parameters(), lr=options.lr)

        def factor(_epoch: int) -> float:  # of the step about to run; total_steps may be set late (--minutes)
            if options.lr_schedule == "constant" or not state.total_steps:
                return 1.0
            return max(0.0, 1.0 - state.step / state.total_steps)

        return [optimizer], [Schedule(torch.optim.lr_scheduler.LambdaLR(optimizer, factor))]

    # -------------------------------------------------------------------------------------- sampling

    def sampling_options(self, **given) -> dict:
        options = super().sampling_options(**given)
        make_scheduler(options["sampler"], self.schedule, options["steps"])  # checks sampler and steps
        if "guidance" in options:
            options["guidance"] = self._check_guidance(options["guidance"])
        return options

    def sampling_record(self, options: dict) -> dict:
        """The sampler and the step count it runs (its default when steps is None)."""
        return {"sampler": options["sampler"],
                "steps": len(make_scheduler(options["sampler"], self.schedule, options["steps"]).timesteps)}

    def noise_for(self, cond: torch.Tensor, n: int, options: dict) -> Callable[[slice], Callable]:
        """noise_for(chunk) -> predict_noise(x_t, t) for the drawings `chunk` of the flattened [C * n] list
        conditioned on `cond` [C, 1, H, W]; it should feed its network channels-last input."""
        raise NotImplementedError

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

        guidance: the paper's g (default 1.0 for cfgdm, 0 for ddpm; fsdm has none); sampler: ancestral |
        ddim | dpm++ | dpm++ode; steps: sampler steps (ancestral: always T; fast samplers: default 20);
        batch_size: drawings per network call (guidance doubles the batch internally).
        """
        if n < 1:
            raise InputError(f"expected n >= 1 drawings per exemplar, got {n}", field="n")
        cond = self.check_exemplars(exemplars)
        options = self.sampling_options(sampler=sampler, steps=steps, guidance=guidance)
        return sample_per_exemplar(self, self.noise_for(cond, n, options), len(cond), n, seed, options["sampler"],
                                   options["steps"], batch_size, progress, options.get("guidance", 0.0))
