"""How reliable is each formulation of the CFGDM "guided score" importance map (SPEC.md 5.2)?

Samples the same trajectories as `drawgap importance maps diffusion` (DPM-Solver++, the demo's 10 steps,
guidance 1, trajectory k of exemplar c from `item_seeds(seed, C, n)[c, k]`) for two seeds, accumulates
several formulations along them, and prints per formulation the seed-to-seed Spearman (maps of seed 0 vs
seed 1, per exemplar, mean and min over exemplars) and the split-half Spearman within seed 0 (even vs odd
trajectories), with m_t = sqrt(1 - alphabar_t), eps_g = (1 + g) eps_c - g eps_u:

  guided          sum_t |m_t eps_g|                     per trajectory, mean over trajectories (SPEC.md 5.2)
  guided_t        |sum_t m_t eps_g|                     signed over time, then magnitude, mean over trajectories
  guided_tk       |mean_k sum_t m_t eps_g|              signed over time and trajectories, then magnitude
  diff_t          |sum_t m_t (eps_c - eps_u)|           the guidance's push, accumulated along the trajectory
  diff_tk         |mean_k sum_t m_t (eps_c - eps_u)|    ... and averaged over trajectories before the magnitude
  diff_abs        sum_t |m_t (eps_c - eps_u)|           per step magnitude, mean over trajectories
  implicit        sum_t |eps_c - eps_u| / m_t           the shipped implicit-classifier map, for reference

    python benchmarks/guided_map_reliability.py --run strokes-cfgdm --classes 10 --trajectories 16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import spearmanr

FORMULATIONS = ("guided", "guided_t", "guided_tk", "diff_t", "diff_tk", "diff_abs", "implicit")


def trajectories(generator, exemplars: torch.Tensor, n: int, seed: int, steps: int, guidance: float) -> dict:
    """{formulation: [C, H, W] map} plus split halves {formulation + '/a', '/b'} (even / odd trajectories)."""
    from diffusers.utils.torch_utils import randn_tensor

    from drawgap.models.base import item_seeds
    from drawgap.models.diffusion.guidance import combine, null_condition
    from drawgap.models.diffusion.samplers import drawing_generators, make_scheduler

    c = len(exemplars)
    cond = exemplars.repeat_interleave(n, dim=0)
    b = len(cond)
    abar = generator.schedule.alphas_cumprod.to(torch.float64)
    scheduler = make_scheduler("dpm++", generator.schedule, steps)
    gens = drawing_generators(item_seeds(seed, c, n).reshape(-1))
    x = randn_tensor((b, *exemplars.shape[1:]), generator=gens, dtype=torch.float32) * scheduler.init_noise_sigma
    acc = {k: torch.zeros_like(cond) for k in ("guided", "guided_t", "diff_t", "diff_abs", "implicit")}
    with torch.inference_mode():
        for t in scheduler.timesteps:
            ti = int(t)
            x_in = scheduler.scale_model_input(x, t)
            tb = torch.full((b,), ti, dtype=torch.long)
            eps_c, eps_u = generator.predict_noise(torch.cat([x_in, x_in]), torch.cat([tb, tb]),
                                                   torch.cat([cond, null_condition(cond)])).chunk(2)
            m = float(torch.sqrt(1 - abar[ti]))
            eps_g = combine(eps_c, eps_u, guidance)
            acc["guided"] += (m * eps_g).abs()
            acc["guided_t"] += m * eps_g  # signed; magnitude taken at the end
            acc["diff_t"] += m * (eps_c - eps_u)
            acc["diff_abs"] += (m * (eps_c - eps_u)).abs()
            acc["implicit"] += (eps_c - eps_u).abs() / m
            x = scheduler.step(eps_g.float(), t, x, generator=gens).prev_sample
    h, w = x.shape[-2:]
    per = {k: v.reshape(c, n, h, w).numpy() for k, v in acc.items()}

    def reduce(k: str, a: np.ndarray) -> np.ndarray:
        if k in ("guided_t", "diff_t"):
            return np.abs(a).mean(1)
        if k in ("guided_tk", "diff_tk"):
            return np.abs(a.mean(1))
        return a.mean(1)

    source = {"guided": "guided", "guided_t": "guided_t", "guided_tk": "guided_t", "diff_t": "diff_t",
              "diff_tk": "diff_t", "diff_abs": "diff_abs", "implicit": "implicit"}
    out = {}
    for k in FORMULATIONS:
        a = per[source[k]]
        out[k] = reduce(k, a)
        out[k + "/a"], out[k + "/b"] = reduce(k, a[:, 0::2]), reduce(k, a[:, 1::2])
    return out


def spearman_per_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b)])


def main() -> None:
    from drawgap.data.formats import read_dataset
    from drawgap.data.strokes import StrokesConfig, build_strokes
    from drawgap.models import load_generator

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="strokes-cfgdm")
    parser.add_argument("--data", default=None, help="test dataset file (default: the built-in strokes test split)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--trajectories", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    test = read_dataset(args.data) if args.data else build_strokes(StrokesConfig())["test"]
    generator = load_generator(args.run).eval()
    exemplars = generator.check_exemplars(test.exemplar_images()[: args.classes])
    started = time.perf_counter()
    maps = [trajectories(generator, exemplars, args.trajectories, seed, args.steps, args.guidance) for seed in (0, 1)]
    print(f"{args.run}: {args.classes} exemplars x {args.trajectories} trajectories, dpm++ {args.steps} steps, "
          f"g = {args.guidance:g}, seeds 0 and 1 ({time.perf_counter() - started:.0f} s)")
    print(f"{'formulation':<12} {'seed-to-seed mean':>18} {'min':>6} {'split-half mean':>16}")
    for k in FORMULATIONS:
        s2s = spearman_per_map(maps[0][k], maps[1][k])
        half = spearman_per_map(maps[0][k + "/a"], maps[0][k + "/b"])
        print(f"{k:<12} {s2s.mean():>18.3f} {s2s.min():>6.3f} {half.mean():>16.3f}")


if __name__ == "__main__":
    main()
