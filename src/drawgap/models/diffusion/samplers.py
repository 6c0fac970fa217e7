"""Samplers: the paper's ancestral sampler (the reference) and diffusers' fast solvers on the same schedule.

- `ancestral`: all T = 500 steps of [DAA] (`PaperLinearScheduler`);
- `ddim`: `DDIMScheduler` (eta = 0, deterministic);
- `dpm++`: `DPMSolverMultistepScheduler`, SDE-DPM-Solver++ (2nd order multistep, stochastic), the default
  fast sampler;
- `dpm++ode`: the same solver in its deterministic (ODE) form.

Why the stochastic form is the default: measured on the shipped strokes CFGDM (20 test classes x 10
drawings, g = 0, seed 0, `benchmarks/sampler_agreement.py`), 500-step ancestral sampling gave
recognizability 50.7 % [42.4, 57.9], diversity 0.744 [0.702, 0.781], originality 0.941 [0.880, 1.009];
SDE-DPM-Solver++ in 20 steps 47.8 %, 0.715, 0.912 (each inside), but the ODE form in 20 steps 37.4 %,
0.801, 1.039 (each outside): with a denoiser as imperfect as a CPU-trained one, the deterministic
solver's drawings are noisier than what the model's reverse process draws.

The fast solvers get the paper's betas (`trained_betas`, `num_train_timesteps = T + 1`), so their
alphas_cumprod are the paper's alphabar, and "trailing" timestep spacing, so they start where the
ancestral sampler starts (t = T). Neither clips nor thresholds: the data live in {0, 1}, not [-1, 1].

`sample_loop` runs any of them with one `torch.Generator` per drawing (see `base.item_seeds`), combines
the conditional and unconditional noise with the guidance, and calls a per-step hook with both (what the
diffusion importance maps accumulate); `sample_in_batches` splits many drawings into network batches,
with the scheduler built once per call (each batch starts from a copy of it).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Callable, Union

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor

from drawgap.errors import InputError
from drawgap.models.diffusion.guidance import combine
from drawgap.models.diffusion.schedule import PaperLinearScheduler

SAMPLERS = ("ancestral", "ddim", "dpm++", "dpm++ode")
# predict_noise(x_t, t) -> eps, or (eps_cond, eps_uncond) for the loop to combine (eps_uncond None: eps_cond alone)
Noise = Callable[[torch.Tensor, torch.Tensor], Union[torch.Tensor, tuple]]
# on_step(t, x_t, eps_cond, eps_uncond), after each network call and before the scheduler's step
StepHook = Callable[[int, torch.Tensor, torch.Tensor, Union[torch.Tensor, None]], None]


def make_scheduler(sampler: str, schedule: PaperLinearScheduler, steps: int | None = None):
    """A fresh scheduler for one sampling run, with its timesteps set.

    steps: None means T for ancestral and 20 for the fast solvers.
    """
    if sampler not in SAMPLERS:
        raise InputError(f"expected a sampler in {', '.join(SAMPLERS)}, got {sampler!r}", field="sampler")
    T = schedule.config.num_train_timesteps
    if steps is not None and not 1 <= int(steps) <= T:
        raise InputError(f"expected a step count in 1..{T}, got {steps}", field="steps")
    if sampler == "ancestral":
        scheduler = PaperLinearScheduler.from_config(schedule.config)
        try:
            scheduler.set_timesteps(steps)
        except ValueError as exc:
            raise InputError(str(exc), field="steps") from None
        return scheduler
    common = dict(**schedule.diffusers_kwargs(), timestep_spacing="trailing")
    if sampler == "ddim":
        scheduler = DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True, thresholding=False)
    else:
        algorithm = "sde-dpmsolver++" if sampler == "dpm++" else "dpmsolver++"
        scheduler = DPMSolverMultistepScheduler(**common, algorithm_type=algorithm, solver_order=2, thresholding=False)
    with warnings.catch_warnings():  # diffusers' numpy-2 DeprecationWarning in DPM-Solver's set_timesteps
        warnings.simplefilter("ignore", DeprecationWarning)
        scheduler.set_timesteps(20 if steps is None else int(steps))
    return scheduler


def drawing_generators(seeds) -> list[torch.Generator]:
    """One CPU generator per drawing, seeded from `base.item_seeds`."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


@torch.no_grad()
def sample_loop(
    predict_noise: Noise,
    scheduler,
    generators: list[torch.Generator],
    image_shape: tuple[int, int, int],
    device: torch.device | str = "cpu",
    on_step: StepHook | None = None,
    guidance: float = 0.0,
) -> torch.Tensor:
    """Run a scheduler from x_T ~ N(0, I) to x_0 for len(generators) drawings.

    predict_noise(x_t, t) -> eps, or (eps_cond, eps_uncond) combined here with the paper's guidance g
    (`guidance.combine`), with t a long tensor [B] of the scheduler's timesteps (paper's t).
    on_step(t, x_t, eps_cond, eps_uncond) sees every step: the timestep, the network's input and its noise
    predictions (eps_uncond None where there is none).
    Noise comes from each drawing's own generator (on the CPU, so results match across devices).
    """
    n = len(generators)
    x = randn_tensor((n, *image_shape), generator=generators, device=torch.device(device), dtype=torch.float32)
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        t_batch = torch.full((n,), int(t), dtype=torch.long, device=x.device)
        x_in = scheduler.scale_model_input(x, t)
        predicted = predict_noise(x_in, t_batch)
        eps_cond, eps_uncond = predicted if isinstance(predicted, tuple) else (predicted, None)
        eps = eps_cond if eps_uncond is None else combine(eps_cond, eps_uncond, guidance)
        if on_step is not None:
            on_step(int(t), x_in, eps_cond, eps_uncond)
        x = scheduler.step(eps.float(), t, x, generator=generators).prev_sample
    return x


def sample_in_batches(
    noise_for: Callable[[slice], Noise],
    seeds: np.ndarray,
    sampler: str,
    schedule: PaperLinearScheduler,
    steps: int | None,
    image_size: int,
    batch_size: int,
    device: torch.device | str = "cpu",
    progress: bool = False,
    guidance: float = 0.0,
) -> torch.Tensor:
    """[len(seeds), 1, H, W] drawings, made `batch_size` at a time and clamped to [0, 1].

    noise_for(chunk) -> predict_noise(x_t, t) for the drawings seeds[chunk] (it selects their conditions);
    guidance: the g that combines its (eps_cond, eps_uncond).
    """
    if batch_size < 1:
        raise InputError(f"expected a batch size >= 1, got {batch_size}", field="batch_size")
    scheduler = make_scheduler(sampler, schedule, steps)  # also validates the options
    n_steps = len(scheduler.timesteps)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = math.ceil(len(seeds) / batch_size) * n_steps
        bar = tqdm(total=total, desc=f"{sampler} x{n_steps}, {len(seeds)} drawings", unit="step", leave=False)
    out = []
    for start in range(0, len(seeds), batch_size):
        chunk = slice(start, start + batch_size)
        x = sample_loop(
            noise_for(chunk),
            copy.deepcopy(scheduler),  # a scheduler keeps state between steps (DPM-Solver's history)
            drawing_generators(seeds[chunk]),
            (1, image_size, image_size),
            device=device,
            on_step=(lambda *_: bar.update()) if bar is not None else None,
            guidance=guidance,
        )
        out.append(x.clamp_(0.0, 1.0).cpu())
    if bar is not None:
        bar.close()
    return torch.cat(out) if out else torch.zeros(0, 1, image_size, image_size)
