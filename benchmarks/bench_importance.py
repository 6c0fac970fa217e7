"""Speed of feature importance (issue 5): diffusion maps for 25 exemplars x 25 trajectories from the demo's
CFGDM (the lean default denoiser, 48 px), critic attribution per drawing, and human maps from clicks.

Target: the three diffusion maps of 25 exemplars x 25 trajectories in < 5 minutes on 2 CPU cores.

The network's weights do not change its speed, so an untrained CFGDM stands in unless --run names a
trained run directory. Exemplars are those of the built-in strokes dataset (made here, 25 test classes).
`--exemplars 5` measures a fifth of the work and extrapolates linearly (the cost is linear in the
number of trajectories at a fixed batch size): use it on a busy machine. Diffusion options left unset are
the library's defaults (`drawgap.importance.diffusion_maps`, where they are explained), so the benchmark
measures what users get; it prints the extrapolated 25 x 25 time, its ratio to the 300 s target, and the
CPU time per trajectory (less sensitive than the wall time to other jobs on the machine).
On a machine whose cores are busy with other (especially higher-priority) jobs, the wall time says how
much CPU the scheduler gave, and 2 threads spend much of their CPU time waiting for each other (measured:
2-4x the CPU time of 1 thread): compare settings with `--threads 1` and the CPU time per trajectory.

    python benchmarks/bench_importance.py [--threads 2] [--exemplars 25] [--steps N] [--precision auto|fp32|bf16]
    python benchmarks/bench_importance.py --exemplars 5 --run runs/gen/strokes-cfgdm --compare
        # also: Spearman of the maps against fp32 maps (same noise) and against another seed's maps
    python benchmarks/bench_importance.py --part critic   # attribution methods, seconds per drawing
    python benchmarks/bench_importance.py --part human    # 250 images x 20 participants x 60 clicks
    python benchmarks/bench_importance.py --part ink --data runs/data/strokes/test.npz [--run RUN_DIR]
        # where the maps of the shipped strokes critics (and of a trained CFGDM) put their mass: on the ink
        # or on the background, per stroke, and how localized they are
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

TARGET_S = 300.0
FULL = 25 * 25  # exemplars x trajectories of the target


def strokes_exemplars(n: int) -> tuple[np.ndarray, np.ndarray]:
    from drawgap.data.strokes import StrokesConfig, build_strokes

    test = build_strokes(StrokesConfig(n_classes=max(10, 5 * n), per_class=2, seed=0))["test"]
    return test.exemplar_images()[:n], test.classes[:n]


def diffusion_options(args) -> dict:
    """The diffusion-map options given on the command line; the others stay the library's defaults (the
    configuration users get, which is the one to measure)."""
    chosen = {"sampler": args.sampler, "steps": args.steps, "n_trajectories": args.trajectories,
              "grad_steps": args.grad_steps, "kinds": tuple(args.kinds.split(",")) if args.kinds else None,
              "batch_size": args.batch_size, "precision": args.precision}
    return {k: v for k, v in chosen.items() if v is not None}


def bench_diffusion(args) -> None:
    from drawgap.importance.compare import spearman
    from drawgap.importance.diffusion_maps import for_generator
    from drawgap.models import create_generator, load_generator
    from drawgap.models.diffusion.samplers import make_scheduler

    generator = load_generator(args.run) if args.run else create_generator("cfgdm", image_size=48)
    generator.eval()
    exemplars, _ = strokes_exemplars(args.exemplars)
    chosen = diffusion_options(args)
    di = for_generator(generator, **chosen)
    cond = generator.check_exemplars(exemplars)
    di.attribute(cond[:1], seed=0)  # warm-up (first-call allocations), not timed
    start, cpu_start = time.perf_counter(), time.process_time()
    maps = di.attribute(cond, seed=0)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start

    n_traj = args.exemplars * di.n_trajectories
    steps = len(make_scheduler(di.sampler, generator.schedule, di.steps).timesteps)
    grad = min(di.grad_steps, steps) if "loss_grad" in di.kinds else 0
    # image-forward equivalents: 2 per trajectory and step (CFG), about 2 per gradient step (forward + backward)
    evals = n_traj * (2 * steps + 2 * grad)
    full = wall * FULL / n_traj
    threads = torch.get_num_threads()
    print(f"diffusion maps ({', '.join(di.kinds)}), {di.sampler} x{steps} steps, {grad} gradient steps, "
          f"{di.options['precision']} (precision={di.precision!r}), {threads} threads, batch {di.batch_size}, "
          f"{'run ' + args.run if args.run else 'untrained CFGDM'}")
    print(f"  {args.exemplars} exemplars x {di.n_trajectories} trajectories: {wall:.1f} s "
          f"({1000 * wall / evals:.2f} ms per image-forward equivalent, {evals} of them)")
    print(f"  25 x 25 (extrapolated linearly when smaller): {full:.1f} s = {full / TARGET_S:.2f} x the {TARGET_S:.0f} s "
          f"target: {'PASS' if full < TARGET_S else 'FAIL'}")
    # On a shared machine the wall time counts other people's work; the process's CPU time is what the job
    # itself used (with 1 thread: the time it takes on one free core; with 2: an upper bound on 2 cores' sum)
    print(f"  CPU time: {1000 * cpu / n_traj:.0f} ms per trajectory; 25 x 25: {cpu * FULL / n_traj:.1f} CPU s, "
          f"i.e. {cpu * FULL / n_traj / max(1, threads):.1f} s on {threads} free core(s) at perfect scaling")
    print(f"  load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    for k, m in maps.items():
        print(f"  {k}: {m.shape}, mean {m.mean():.4g}")
    if args.compare:
        # The maps against fp32 ones (same trajectories' noise) and against another seed (the sampling noise
        # of the maps themselves, the floor any faster setting should stay well above)
        others = {"fp32": (dict(precision="fp32"), 0), "seed 1": ({}, 1)}
        for name, (change, seed) in others.items():
            ref = for_generator(generator, **{**chosen, **change})
            other = ref.attribute(cond, seed=seed)
            rho = {k: [spearman(a, b) for a, b in zip(maps[k], other[k])] for k in maps}
            print(f"  Spearman per map vs {name}: " + "; ".join(
                f"{k} min {np.nanmin(r):.3f} mean {np.nanmean(r):.3f}" for k, r in rho.items()))


def bench_critic(args) -> None:
    from drawgap.critics import ProtoNetCritic
    from drawgap.importance.critic_attribution import METHODS, critic_maps

    torch.manual_seed(0)
    # --critic-arch quickdraw: the ResNet ProtoNet of QuickDraw-FS (about 10x heavier)
    critic = ProtoNetCritic(args.critic_arch, image_size=48).eval()
    exemplars, _ = strokes_exemplars(20)
    drawings = exemplars[:args.drawings]
    print(f"critic attribution: {critic.kind}/{critic.arch} {critic.image_size}px, 20-way episode, "
          f"{len(drawings)} drawings, {torch.get_num_threads()} threads")
    for method in METHODS:
        start = time.perf_counter()
        cpu = time.process_time()
        critic_maps(critic, drawings, exemplars, np.arange(len(drawings)), method)
        per = (time.perf_counter() - start) / len(drawings)
        per_cpu = (time.process_time() - cpu) / len(drawings)
        print(f"  {method:22s} {per:8.2f} s per drawing ({per_cpu:.2f} CPU s)")


def bench_human(args) -> None:
    from drawgap.importance.human_maps import Clicks, build_human_maps

    rng = np.random.default_rng(0)
    n_img, n_part, n_clicks = 250, 20, 60
    centres = rng.uniform(40, 216, size=(n_img, 2))
    img = np.repeat(np.arange(n_img), n_part * n_clicks)
    part = np.tile(np.repeat(np.arange(n_part), n_clicks), n_img)
    xy = centres[img] + rng.normal(0, 25, size=(len(img), 2))
    clicks = Clicks(np.clip(xy[:, 0], 0, 255), np.clip(xy[:, 1], 0, 255), np.zeros(len(img)), part.astype(str),
                    img.astype(str), np.arange(n_img).astype(str), (np.arange(n_img) // 10).astype(str))
    for rule in ("box", "gaussian"):
        start = time.perf_counter()
        m = build_human_maps(clicks, rule=rule, n_splits=50)
        print(f"human maps ({rule}): {n_img} images x {n_part} participants x {n_clicks} clicks, 50 split-halves: "
              f"{time.perf_counter() - start:.1f} s; median ceiling {np.nanmedian(m.ceiling):.3f}")


def bench_ink(args) -> None:
    from drawgap.critics import load_critic
    from drawgap.data.formats import read_dataset
    from drawgap.importance.compare import ink_report, strokes_masks
    from drawgap.importance.critic_attribution import critic_importance
    from drawgap.importance.diffusion_maps import diffusion_importance

    if not args.data:
        raise SystemExit("--part ink needs --data (a dataset file of the built-in strokes dataset)")
    ds = read_dataset(args.data)
    sources = []
    methods = {"saliency": {}, "integrated_gradients": {}, "smoothgrad": {}, "occlusion": {},
               "rise": {"n_masks": 500}, "sobol": {"n_design": 16}}
    for name in ("strokes-protonet", "strokes-simclr"):
        critic = load_critic(name)
        for method, opts in methods.items():
            if method in ("rise", "sobol") and name != "strokes-protonet":
                continue
            start = time.perf_counter()
            m = critic_importance(critic, ds, method, per_class=1, seed=0, **opts)
            sources.append((f"{name} {method}", m, time.perf_counter() - start))
    if args.run:
        from drawgap.models import load_generator

        gen = load_generator(args.run)
        n = args.exemplars
        start = time.perf_counter()
        maps = diffusion_importance(gen, ds.exemplar_images()[:n], ds.classes[:n], image_ids=ds.exemplars[:n].astype(str),
                                    **diffusion_options(args))
        took = time.perf_counter() - start
        sources += [(f"cfgdm {k}", m, took) for k, m in maps.items()]
    cols = ("mass_on_ink", "ink_area", "ink_enrichment", "normalized_entropy", "pixels_50", "pixels_90", "regions")
    print(f"maps on {args.data} ({ds.n_classes} classes), ink dilated by 1 px at 48 px; per-stroke mass = mean "
          "share of the map's mass on the stroke that holds most of it")
    print(f"{'source':40s} " + " ".join(f"{c:>12s}" for c in cols) + f" {'top stroke':>10s} {'seconds':>8s}")
    for name, m, took in sources:
        r = ink_report(m, 48, 0.5, 1, strokes_masks(ds, m.image_ids))
        top = np.mean([max(s) if s else np.nan for s in r["per_map"]["mass_per_stroke"]])
        print(f"{name:40s} " + " ".join(f"{r['mean'][c]:12.3f}" for c in cols) + f" {top:10.3f} {took:8.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("diffusion", "critic", "human", "ink", "all"), default="diffusion")
    p.add_argument("--data", default=None, help="strokes dataset file for --part ink")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--run", default=None, help="trained cfgdm run directory (default: an untrained one)")
    p.add_argument("--exemplars", type=int, default=25)
    p.add_argument("--trajectories", type=int, default=None, help="diffusion: default the library's (25)")
    # diffusion options: unset means the library's default (see `diffusion_options`)
    p.add_argument("--sampler", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--grad-steps", type=int, default=None)
    p.add_argument("--kinds", default=None, help="comma-separated (default: guided_diff, implicit, loss_grad)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None)
    p.add_argument("--compare", action="store_true",
                   help="diffusion: also Spearman of the maps against fp32 maps and against another seed's")
    p.add_argument("--critic-arch", choices=("omniglot", "quickdraw"), default="omniglot")
    p.add_argument("--drawings", type=int, default=2, help="drawings explained per critic method")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    parts = ("diffusion", "critic", "human") if args.part == "all" else (args.part,)
    for part in parts:
        {"diffusion": bench_diffusion, "critic": bench_critic, "human": bench_human, "ink": bench_ink}[part](args)


if __name__ == "__main__":
    main()
