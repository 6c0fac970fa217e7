"""Importance maps of an exemplar-conditioned diffusion model (SPEC.md 5.2), computed along its sampling
trajectories: which pixels does the exemplar make the model draw, and which exemplar pixels matter.

For each exemplar c, `n_trajectories` drawings are sampled with classifier-free guidance g (the paper's
convention, eps = (1 + g) eps_c - g eps_u, null condition = all-zeros exemplar). At every visited timestep t
in `t_range`, with m_t = sqrt(1 - alphabar_t):
- "guided" (a):   sum_t | m_t ((1 + g) eps_c - g eps_u) |, the guided noise scaled to data units, the
  pixel-space analogue of the [LM] released score (SPEC.md 5.2, best guess for ICML). At noise level on the
  trained strokes CFGDM (see the caveat below), so not among `DEFAULT_KINDS`;
- "guided_diff" (a'): | sum_t m_t (eps_c - eps_u) |, the guided score with the trajectory's own noise taken
  out: what the condition adds to the noise prediction (eps_c - eps_u, the part of the guided score that
  guidance scales), in data units, accumulated with its sign along the trajectory, its magnitude taken at the
  end. The guided map's reliable replacement in the report (`benchmarks/guided_map_reliability.py`);
- "implicit" (b): sum_t | eps_c - eps_u | / m_t, the magnitude of CFG's implicit-classifier gradient
  grad_x log p(c | x_t) = -(eps_c - eps_u) / m_t;
- "loss_grad" (c): sum_t | d L_t / d c |, the gradient w.r.t. the exemplar's pixels of the conditional
  denoising loss L_t = || eps_theta(x_t, t, c) - eps*_t ||^2, where eps*_t = (x_t - sqrt(alphabar_t) x_0) / m_t
  is the noise that separates the trajectory's x_t from the drawing x_0 it ends in. (a) and (b) live in the
  drawing's pixel space, (c) in the exemplar's; all are averaged over trajectories.

Defaults and why (timings: `benchmarks/bench_importance.py`, the demo's CFGDM = the lean 24-48-64 denoiser at
48 px; the cost is the denoiser's: 2 passes (cond + uncond) per trajectory and sampler step, plus a forward
and a backward pass per loss-gradient step). With them, one trajectory costs 0.18 CPU-seconds on one core of
an AMD EPYC with AVX512-BF16, so 25 x 25 take about 110 CPU-seconds (fp32, 256 per call: 0.52, 320 s):
- sampler "dpm++" (DPM-Solver++ 2M) with `steps` = 10: the fastest solver of `drawgap.models` that still
  gives drawings, so 25 exemplars x 25 trajectories fit the 5-minute CPU budget of the benchmark; the
  ancestral T-step sampler of the paper is available (`sampler="ancestral"`) when time allows. Measured on
  the trained strokes CFGDM (5 exemplars x 25 trajectories, mean Spearman per map against 20-step maps,
  implicit / loss_grad): 10 steps 0.956 / 0.967, 8 steps 0.930 / 0.960, 6 steps 0.893 / 0.937, where two
  seeds at 10 steps agree to 0.871 / 0.924. 10 steps stay well above that seed-to-seed floor; fewer steps
  save time linearly but drift towards it;
- `t_range` = all timesteps: with few steps, every visited step is kept; [LM] keeps 100 of 1000 steps,
  weighted towards high noise, which the visited steps of a short "trailing" schedule already are;
- `grad_steps` = 3: the loss gradient costs a forward and a backward pass per step (about 2 forwards), so it
  is taken at 3 of the visited steps in `t_range` (evenly spread, high to low noise) rather than at all 10:
  about a quarter of the total time instead of half of it;
- `precision` = "auto": bfloat16 autocast where the hardware computes in bf16 natively (x86 CPUs with
  AVX512-BF16 or AMX, CUDA GPUs that support it), else fp32. On such a CPU the denoiser runs about 2x
  faster (its time is 75 % convolutions, which bf16 halves) and the maps rank like fp32 ones: Spearman
  per map against fp32 maps of the same noise, min / mean over 5 strokes exemplars, guided 1.000 / 1.000,
  implicit 0.988 / 0.991, loss_grad 0.997 / 0.998 (the benchmark's `--compare` re-measures it); maps and
  the sampler's updates still accumulate in float32. Without native bf16 the autocast is emulated and
  slower, hence "auto". The precision used is recorded in `options`;
- `batch_size` = 64 trajectories per network call (128 images with the cond and uncond passes batched
  together), whole exemplars per call: on CPU the per-image cost is flat from 32 to 128 images and grows
  beyond (fp32: 12-14 ms per image at 64-128 images, 21 ms at 512, on one core), as activations
  outgrow the caches;
- the sampling passes run under `torch.inference_mode` (no autograd bookkeeping); only the loss-gradient
  passes record a graph, and only for the exemplar (the weights' gradients are never computed);
- `n_trajectories` = 25 and guidance g = 1 as in [LM] and the paper's CFGDM; `seed` = 0, and trajectory k
  of exemplar c starts from the noise of `drawgap.models.base.item_seeds(seed, C, n)[c, k]`, so the
  trajectories are those of the generator's `sample(..., seed=seed)` with the same sampler (exactly so in
  fp32; in bf16 they follow the same noise to bf16 precision). Same seed and options on the same machine
  give the same maps.

Caveat, measured on the trained strokes CFGDM: the guided map (a) is dominated by the trajectories' own
noise, since at high noise eps_theta ~ the noise x_T itself and m_t weighs those steps most. With 25
trajectories, maps of two seeds correlate at Spearman ~0.01, while maps of the same seed at 6, 8, 10 or 20
steps, fp32 or bf16, agree to 1.000. Its ranking says little about the exemplar unless many more
trajectories are averaged; (b) and (c) do not have this problem (seed-to-seed 0.87 and 0.92). Averaging (a)
with its sign over timesteps, or over timesteps and trajectories, before the magnitude does not help
(seed-to-seed -0.002 and -0.000, 10 exemplars x 4 trajectories, dpm++ 10 steps); taking the unconditional
noise out does: (a') agrees seed to seed at 0.795 (min 0.768) on the same exemplars, (b) at 0.733.

Every maps file records its reliability (`drawgap.importance.reliability`): the split-half Spearman (Spearman-Brown corrected) over
trajectories (even vs odd) of each exemplar's map, in `meta["reliability"]`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from drawgap.errors import InputError

KINDS = ("guided", "guided_diff", "implicit", "loss_grad")
DEFAULT_KINDS = ("guided_diff", "implicit", "loss_grad")  # "guided" is at noise level (module docstring)
PRECISIONS = ("auto", "fp32", "bf16")
Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class DiffusionImportance:
    """DiffusionImportance(denoise, schedule, ...): `denoise(x_t, t, cond) -> eps` with integer timesteps t
    [B] and exemplars cond [B, 1, H, W]; `schedule` the model's `PaperLinearScheduler` (its alphabar)."""

    denoise: Denoise
    schedule: object
    guidance: float = 1.0
    sampler: str = "dpm++"
    steps: int | None = 10
    n_trajectories: int = 25
    t_range: tuple[int, int] | None = None
    grad_steps: int = 3
    kinds: tuple[str, ...] = DEFAULT_KINDS
    batch_size: int = 64
    precision: str = "auto"
    options: dict = field(init=False)

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise InputError(f"expected kinds among {', '.join(KINDS)}, got {', '.join(map(str, self.kinds)) or 'none'}", field="kinds")
        if self.n_trajectories < 1:
            raise InputError(f"expected at least 1 trajectory, got {self.n_trajectories}", field="n_trajectories")
        if self.precision not in PRECISIONS:
            raise InputError(f"expected precision {', '.join(PRECISIONS)}, got {self.precision!r}", field="precision")
        if self.batch_size < 1:
            raise InputError(f"expected a batch size >= 1, got {self.batch_size}", field="batch_size")
        if self.grad_steps < 1:
            raise InputError(f"expected at least 1 gradient step, got {self.grad_steps}", field="grad_steps")
        T = int(self.schedule.config.num_train_timesteps)
        lo, hi = self.t_range or (1, T)
        if not 1 <= lo <= hi <= T:
            raise InputError(f"expected a timestep range within 1..{T}, got {lo}..{hi}", field="t_range")
        self.t_range = (int(lo), int(hi))
        self._bf16 = self.precision == "bf16"  # "auto" is resolved by `attribute`, for the exemplars' device
        self.options = {"guidance": self.guidance, "sampler": self.sampler, "steps": self.steps,
                        "n_trajectories": self.n_trajectories, "t_range": list(self.t_range),
                        "grad_steps": self.grad_steps, "kinds": list(self.kinds), "precision": self.precision}

    def attribute(self, exemplars: torch.Tensor, seed: int = 0, progress: bool = False,
                  return_samples: bool = False, return_halves: bool = False) -> dict[str, np.ndarray]:
        """{kind: float32 [C, H, W]} maps for exemplars [C, 1, H, W] in [0, 1]; with `return_samples`, also
        "samples": the drawings [C, n, H, W] the trajectories end in (clamped to [0, 1], as `sample` returns);
        with `return_halves`, also "<kind>/a" and "<kind>/b": the maps of the even and of the odd trajectories.
        `options["precision"]` then holds the precision used ("auto" resolved for the exemplars' device)."""
        from tqdm.auto import tqdm

        from drawgap.models.base import item_seeds
        from drawgap.models.diffusion.samplers import make_scheduler

        lo, hi = self.t_range
        scheduler = make_scheduler(self.sampler, self.schedule, self.steps)  # once per call; each chunk runs a copy
        visited = [int(t) for t in scheduler.timesteps]
        if not any(lo <= t <= hi for t in visited):
            raise InputError(f"no timestep of the {self.sampler} sampler ({', '.join(map(str, visited[:12]))}"
                             f"{', ...' if len(visited) > 12 else ''}) lies in {lo}..{hi}", field="t_range")
        self._bf16 = resolve_precision(self.precision, exemplars.device) == "bf16"
        self.options["precision"] = "bf16" if self._bf16 else "fp32"
        c = len(exemplars)
        seeds = item_seeds(int(seed), c, self.n_trajectories).reshape(-1)
        # Whole exemplars per chunk (at least one), so a chunk's trajectories share the batched passes.
        per_chunk = max(1, self.batch_size // self.n_trajectories)
        halves = tuple(f"{k}/{h}" for k in self.kinds for h in "ab") if return_halves and self.n_trajectories >= 2 else ()
        out = {k: [] for k in (*self.kinds, *halves, *(("samples",) if return_samples else ()))}
        chunks = range(0, c, per_chunk)
        for start in tqdm(chunks, desc="diffusion maps", unit="chunk", disable=not progress):
            ex = exemplars[start: start + per_chunk]
            s = seeds[start * self.n_trajectories: (start + len(ex)) * self.n_trajectories]
            for k, v in self._chunk(ex, s, copy.deepcopy(scheduler)).items():
                if k in out:
                    out[k].append(v)
        return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}

    # ------------------------------------------------------------------------------------------ one chunk

    def _chunk(self, exemplars: torch.Tensor, seeds: np.ndarray, scheduler) -> dict[str, np.ndarray]:
        """The maps of a few exemplars, accumulated by a hook on the generators' own sampling loop."""
        from drawgap.models.diffusion.guidance import combine, null_condition
        from drawgap.models.diffusion.samplers import drawing_generators, sample_loop

        n, g = self.n_trajectories, float(self.guidance)
        cond = exemplars.repeat_interleave(n, dim=0)
        abar = self.schedule.alphas_cumprod.to(torch.float64)
        lo, hi = self.t_range
        kept = [int(t) for t in scheduler.timesteps if lo <= int(t) <= hi]
        grad_at = set(_spread(kept, self.grad_steps)) if "loss_grad" in self.kinds else set()
        guided = torch.zeros_like(cond)
        guided_diff = torch.zeros_like(cond)  # signed: its magnitude is taken at the end
        implicit = torch.zeros_like(cond)
        saved = []  # (t, x_t) where the loss gradient is taken, once x_0 is known

        def both_passes(x_t: torch.Tensor, t: torch.Tensor):  # always both, even at g = 0: the maps need eps_u
            return self._batched(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, null_condition(cond)])).chunk(2)

        def accumulate(t: int, x_t: torch.Tensor, eps_c: torch.Tensor, eps_u: torch.Tensor) -> None:
            nonlocal guided, guided_diff, implicit
            if t in kept:
                m = float(torch.sqrt(1 - abar[t]))
                guided += (m * combine(eps_c, eps_u, g)).abs()
                guided_diff += m * (eps_c - eps_u)
                implicit += (eps_c - eps_u).abs() / m
            if t in grad_at:
                saved.append((t, x_t.clone()))

        with torch.inference_mode():
            x = sample_loop(both_passes, scheduler, drawing_generators(seeds), tuple(exemplars.shape[1:]),
                            device=exemplars.device, on_step=accumulate, guidance=g)
        h, w = x.shape[-2:]
        out = {"samples": x.clamp(0.0, 1.0).reshape(-1, n, h, w).cpu().numpy()}
        per_trajectory = {"guided": lambda: guided, "guided_diff": lambda: guided_diff.abs(), "implicit": lambda: implicit,
                          "loss_grad": lambda: self._loss_grad(cond, x, saved, abar)}
        for kind in self.kinds:
            values = per_trajectory[kind]()
            out[kind] = _mean_over_trajectories(values, n)
            if n >= 2:  # split halves for the reliability: even and odd trajectories of each exemplar
                b_, _, hh, ww = values.shape
                split = values.reshape(b_ // n, n, 1, hh, ww)
                out[f"{kind}/a"] = split[:, 0::2].mean(1)[:, 0].detach().cpu().numpy()
                out[f"{kind}/b"] = split[:, 1::2].mean(1)[:, 0].detach().cpu().numpy()
        return out

    def _loss_grad(self, cond: torch.Tensor, x0: torch.Tensor, saved: list, abar: torch.Tensor) -> torch.Tensor:
        """sum over saved steps of |d L_t / d cond| per trajectory (each trajectory has its own copy of c)."""
        total = torch.zeros_like(cond)
        x0 = x0.clone()  # out of inference mode: normal tensors from here on
        for ti, x_t in saved:
            x_t = x_t.clone()
            a = float(abar[ti])
            target = (x_t - a ** 0.5 * x0) / (1 - a) ** 0.5
            for s in range(0, len(cond), self.batch_size):
                c = cond[s: s + self.batch_size].detach().requires_grad_(True)
                tb = torch.full((len(c),), ti, dtype=torch.long, device=c.device)
                eps = self._net(x_t[s: s + self.batch_size], tb, c)
                loss = (eps - target[s: s + self.batch_size]).pow(2).sum()  # per-trajectory sums: grads stay separate
                (grad,) = torch.autograd.grad(loss, c)
                total[s: s + self.batch_size] += grad.abs()
        return total

    def _batched(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        step = 2 * self.batch_size  # a CFG pass doubles the batch
        return torch.cat([self._net(x[s: s + step], t[s: s + step], cond[s: s + step]) for s in range(0, len(x), step)])

    def _net(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The denoiser, under bfloat16 autocast when precision is "bf16"; float32 out either way (the maps
        and the sampler's updates accumulate in float32)."""
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self._bf16):
            return self.denoise(x, t, cond).float()


def resolve_precision(precision: str, device) -> str:
    """"fp32" or "bf16": "auto" is bf16 where the device computes in bf16 natively, else fp32."""
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        # torch.cpu's capability checks are private; absent ones count as "no" (fp32 is always correct)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return "bf16" if any(getattr(torch.cpu, name, lambda: False)() for name in checks) else "fp32"
    return "fp32"


def _spread(items: list[int], k: int) -> list[int]:
    """k items spread evenly over the list (all of them when k >= len)."""
    if k >= len(items):
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in idx]


def _mean_over_trajectories(per_trajectory: torch.Tensor, n: int) -> np.ndarray:
    b, _, h, w = per_trajectory.shape
    return per_trajectory.reshape(b // n, n, h, w).mean(1).detach().cpu().numpy()


def for_generator(generator, **options) -> DiffusionImportance:
    """DiffusionImportance of a drawgap diffusion generator (`cfgdm`; `ddpm` for the loss gradient only,
    since a model never trained without its condition has no unconditional noise to compare with)."""
    if not hasattr(generator, "predict_noise") or not hasattr(generator, "schedule"):
        raise InputError(f"expected an exemplar-conditioned diffusion generator (cfgdm), got {getattr(generator, 'name', type(generator).__name__)!r}",
                         field="generator")
    # Sampler, steps and guidance are checked by the family, as `drawgap sample` checks them (a wrong sampler,
    # or a guidance the family lacks or cannot use, is refused with the same message); None: its default.
    checked = generator.sampling_options(**{k: options.get(k) for k in ("sampler", "steps", "guidance")})
    if "guidance" not in checked:  # e.g. fsdm: conditioned on a set, without guidance
        raise InputError(f"expected an exemplar-conditioned diffusion generator (cfgdm), got {generator.name!r}", field="generator")
    options = {**options, **checked}
    kinds = tuple(options.get("kinds", DEFAULT_KINDS))
    guidance = options["guidance"]
    if getattr(generator, "cond_drop_prob", 0.1) == 0 and (guidance != 0 or set(kinds) & {"guided", "guided_diff", "implicit"}):
        raise InputError(f"{generator.name} was trained without dropping the condition: it has no unconditional noise "
                         "for the guided and implicit maps; use a cfgdm, or --kind loss_grad with --guidance 0", field="generator")
    generator.eval()
    return DiffusionImportance(generator.predict_noise, generator.schedule, **options)


def exemplars_of(source, classes: int = 0):
    """(exemplars [C, H, W], class names [C], image ids [C] or None) of a dataset file (ids: the exemplars'
    indices in it) or a samples file; `classes` > 0 keeps the first ones."""
    from drawgap.data.formats import Dataset

    if classes < 0:
        raise InputError(f"expected a number of classes >= 0 (0: all), got {classes}", field="classes")
    n = classes or source.n_classes
    if isinstance(source, Dataset):
        return source.exemplar_images()[:n], source.classes[:n], source.exemplars[:n].astype(str)
    return source.exemplars[:n], source.classes[:n], None


def diffusion_importance(generator, exemplars, classes, *, seed: int = 0, progress: bool = False, image_ids=None,
                         **options) -> dict:
    """{kind: ImportanceMaps} of a diffusion generator for exemplars (any drawgap image array, one per class)."""
    from drawgap.importance import reliability
    from drawgap.importance.maps_file import ImportanceMaps, make_meta

    di = for_generator(generator, **options)
    cond = generator.check_exemplars(exemplars)
    maps = di.attribute(cond, seed=seed, progress=progress, return_halves=True)
    n = di.n_trajectories
    kept = {}
    for kind in di.kinds:
        if n >= 2:
            kept[kind] = reliability.split_half(maps[f"{kind}/a"], maps[f"{kind}/b"], "trajectories", n // 2)
        else:
            kept[kind] = reliability.unknown(len(cond), "one trajectory per exemplar, no halves to compare")
    classes = np.asarray(classes).astype(str)
    ids = classes if image_ids is None else np.asarray(image_ids).astype(str)
    images = cond[:, 0].detach().cpu().numpy().astype(np.float32)
    generator_info = {"name": getattr(generator, "name", None), "config": getattr(generator, "config", None)}
    return {kind: ImportanceMaps(maps[kind], ids, classes, make_meta(f"diffusion-{kind}", di.options, seed, generator=generator_info,
                                                                     reliability=kept[kind]), images=images)
            for kind in di.kinds}
