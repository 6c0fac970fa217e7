"""Sampling speed of the paper's configuration against drawgap's default, and (optionally) their quality.

Speed, seconds per drawing, measured in one run on the same machine, at batch 1 and 32 (configurable):

  (a) paper:   CFGDM, paper denoiser (n_feat 48, 8.5 M parameters), 500 ancestral steps, guidance g = 1
               (conditional + unconditional pass as one doubled batch). Only the first few steps are timed
               (`--paper-steps`, default 3) and the time is extrapolated to 500: every step costs the same
               network call on the same batch, so the extrapolation is linear. The output says so. The
               sampling path feeds the network channels-last (NHWC) input, faster for the lean denoiser;
               the paper denoiser is timed with both NHWC and NCHW input and keeps the faster, so the
               reference is never slowed by an optimisation made for the default.
  (b) default: CFGDM, lean denoiser (diffusers UNet2DModel), DPM-Solver++ 20 steps, guidance g = 1, timed
               over the whole sampling call.

The weights do not change the cost of a network call, so the speed part uses untrained models. The ratio
(a) / (b) is printed per batch size; the target is at least 100x on 2 CPU cores.

Quality (`--quality`): both are trained for the same number of optimizer steps (`--train-steps`, same
batch size and recipe) on the built-in strokes dataset, sampled from the test exemplars with their own
sampler ((a) 500 ancestral steps, (b) DPM-Solver++ 20), and evaluated with the strokes critics
(`drawgap.metrics.evaluate`, critics "strokes"): recognizability and diversity with 95 % intervals.
Sampling the paper configuration on a CPU is slow (about a minute per drawing), so the default quality
run is small; the time it will take is printed first. Skipped with a message when the critics or metrics
are not installed.

    python benchmarks/bench_sampling.py                       # speed only, 2 threads
    python benchmarks/bench_sampling.py --quality --train-steps 300 --classes 10 --per-exemplar 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import torch

from drawgap.models import create_generator
from drawgap.models.base import item_seeds
from drawgap.models.diffusion.guidance import guided_noise
from drawgap.models.diffusion.model import channels_last
from drawgap.models.diffusion.samplers import drawing_generators, make_scheduler, sample_loop

IMAGE = 48
GUIDANCE = 1.0


def _timed(fn, repeats: int, device: str) -> tuple[float, float]:
    """(wall, CPU) seconds of fn(), each the best of `repeats` runs: on a shared machine the best run is the
    one least disturbed by other processes; CPU time also counts only this process's work."""
    walls, cpus = [], []
    for _ in range(repeats):
        _sync(device)
        w, c = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def paper_seconds_per_drawing(batch: int, timed_steps: int, device: str, repeats: int) -> tuple[float, float, str]:
    """Time `timed_steps` ancestral steps of the paper configuration at `batch` drawings; extrapolate to T.

    Both layouts are timed, the sampling path's channels-last (NHWC input via `guided_noise`, NHWC weights
    as `sample` sets them) and plain NCHW (`predict_noise`), and the faster is kept: the reference never
    runs in a layout that is slower for it. Returns (wall, CPU, layout of the faster wall).
    """
    g = create_generator("cfgdm", seed=0, image_size=IMAGE, preset="paper").to(device).eval()
    cond = torch.rand(batch, 1, IMAGE, IMAGE, device=device).round()
    T = len(make_scheduler("ancestral", g.schedule).timesteps)
    layouts = {
        "NHWC": (lambda x, t: g.guided_noise(x, t, cond, GUIDANCE), lambda: channels_last(g.denoiser)),
        "NCHW": (lambda x, t: guided_noise(g.predict_noise, x, t, cond, GUIDANCE), contextlib.nullcontext),
    }

    def run(noise, steps: int) -> None:
        scheduler = make_scheduler("ancestral", g.schedule)
        scheduler.timesteps = scheduler.timesteps[:steps]
        sample_loop(noise, scheduler, drawing_generators(item_seeds(0, 1, batch)[0]), (1, IMAGE, IMAGE), device)

    best = None
    for layout, (noise, weights_layout) in layouts.items():
        with weights_layout():
            run(noise, 1)  # warm-up: allocations, kernel selection
            wall, cpu = _timed(lambda: run(noise, timed_steps), repeats, device)
        if best is None or wall < best[0]:
            best = (wall, cpu, layout)
    wall, cpu, layout = best
    return wall / timed_steps * T / batch, cpu / timed_steps * T / batch, layout


def default_seconds_per_drawing(batch: int, steps: int, device: str, repeats: int) -> tuple[float, float]:
    """Time a whole default sampling call (DPM-Solver++ `steps`, guidance) of `batch` drawings."""
    g = create_generator("cfgdm", seed=0, image_size=IMAGE, preset="default").to(device).eval()
    exemplar = torch.rand(1, 1, IMAGE, IMAGE).round()
    run = lambda: g.sample(exemplar, batch, seed=0, sampler="dpm++", steps=steps, guidance=GUIDANCE, batch_size=batch)  # noqa: E731
    run()  # warm-up
    wall, cpu = _timed(run, repeats, device)
    return wall / batch, cpu / batch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------------- quality


def quality(args) -> None:
    try:
        from drawgap.critics import load_critic
        from drawgap.metrics.evaluate import evaluate

        load_critic("strokes-protonet")
        load_critic("strokes-simclr")
    except Exception as exc:  # not installed yet, or no shipped weights
        print(f"quality: skipped, strokes critics or metrics unavailable ({type(exc).__name__}: {exc})")
        return
    from drawgap.data.formats import Samples, read_dataset
    from drawgap.data.transforms import to_uint8
    from drawgap.models import load_generator
    from drawgap.models.diffusion.family import DiffusionOptions
    from drawgap.models.training import TrainOptions, train

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_sampling_"))
    data = Path(args.data) if args.data else _strokes(work)
    train_ds, test_ds = read_dataset(data / "train.npz"), read_dataset(data / "test.npz")
    exemplars = test_ds.exemplar_images()[: args.classes]
    classes = test_ds.classes[: args.classes]
    n = len(exemplars) * args.per_exemplar
    print(f"quality: {args.train_steps} optimizer steps (batch {args.batch_size}) per configuration on {data}; "
          f"{len(exemplars)} test classes x {args.per_exemplar} drawings; about "
          f"{n * args._paper_s_per_drawing / 60:.0f} min to sample (a) at the speed measured above")
    configs = {
        "paper": dict(preset="paper", sampler="ancestral", steps=None),
        "default": dict(preset="default", sampler="dpm++", steps=args.default_steps),
    }
    for name, cfg in configs.items():
        run = work / f"run_{name}"
        g = create_generator("cfgdm", seed=0, image_size=train_ds.image_size, preset=cfg["preset"])
        t0 = time.perf_counter()
        options = TrainOptions(steps=args.train_steps, batch_size=args.batch_size, seed=0, checkpoint_every=args.train_steps)
        result = train(g, train_ds, run, options, family_options=DiffusionOptions(lr=args.lr), progress=args.progress)
        train_s = time.perf_counter() - t0
        g = load_generator(run, map_location=args.device)
        t0 = time.perf_counter()
        x = g.sample(exemplars, args.per_exemplar, seed=0, sampler=cfg["sampler"], steps=cfg["steps"], guidance=GUIDANCE,
                     batch_size=32, progress=args.progress)
        sample_s = time.perf_counter() - t0
        C, S = x.shape[:2]
        samples = Samples(to_uint8(x.reshape(C * S, 1, *x.shape[-2:])).reshape(C, S, *x.shape[-2:]), exemplars, classes,
                          {"format": "drawgap.samples/1", "generator": f"cfgdm-{name}", "params": cfg, "dataset": {}})
        m = evaluate(samples, critics="strokes", bootstrap=200, queries=args.queries)
        ci = m["ci95"]
        print(json.dumps({
            "config": name, "train_steps": result.state.step, "train_s": round(train_s, 1), "final_loss": result.state.loss,
            "sample_s_per_drawing": round(sample_s / n, 4),
            "recognizability": round(m["recognizability"], 2), "recognizability_ci95": ci.get("recognizability"),
            "diversity": round(m["diversity"], 4), "diversity_ci95": ci.get("diversity"),
        }))


def _strokes(work: Path) -> Path:
    from drawgap.data.formats import write_dataset
    from drawgap.data.strokes import build_strokes

    splits = build_strokes()
    for split, ds in splits.items():
        write_dataset(ds, work / "strokes" / f"{split}.npz")
    return work / "strokes"


# ------------------------------------------------------------------------------------------------------ main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,32", help="batch sizes to time (drawings per call)")
    p.add_argument("--paper-steps", type=int, default=3, help="ancestral steps timed for (a), extrapolated to 500")
    p.add_argument("--default-steps", type=int, default=20, help="DPM-Solver++ steps of (b)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per measurement (the best is kept)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quality", action="store_true", help="also train both and compare recognizability (slow)")
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32, help="training batch size of both")
    p.add_argument("--lr", type=float, default=1e-4, help="training learning rate of both (Adam, linear decay)")
    p.add_argument("--classes", type=int, default=10, help="test classes sampled for the quality part")
    p.add_argument("--per-exemplar", type=int, default=5)
    p.add_argument("--queries", type=int, default=100, help="recognizability queries per class")
    p.add_argument("--data", help="folder with train.npz and test.npz (default: build the strokes dataset)")
    p.add_argument("--work-dir", help="where the quality runs go (default: a temporary folder)")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    print(f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, image {IMAGE}x{IMAGE}, "
          f"guidance g={GUIDANCE} (2x batch)")
    print(f"(a) paper: paper denoiser, 500 ancestral steps -- timed over {args.paper_steps} steps and extrapolated to 500; "
          "network input NCHW and NHWC both timed, the faster kept")
    print(f"(b) default: lean denoiser, DPM-Solver++ {args.default_steps} steps -- timed over the whole sampling call")
    print("seconds per drawing, best of", args.repeats, "runs; wall clock and this process's CPU time")
    print(f"{'batch':>5}  {'(a) wall':>9}  {'(b) wall':>9}  {'ratio':>6}  {'(a) CPU':>9}  {'(b) CPU':>9}  {'ratio':>6}  {'(a) input':>9}")
    for batch in [int(b) for b in args.batches.split(",")]:
        a_wall, a_cpu, a_layout = paper_seconds_per_drawing(batch, args.paper_steps, args.device, args.repeats)
        b_wall, b_cpu = default_seconds_per_drawing(batch, args.default_steps, args.device, args.repeats)
        args._paper_s_per_drawing = a_wall
        print(f"{batch:>5}  {a_wall:>9.2f}  {b_wall:>9.3f}  {a_wall / b_wall:>5.0f}x  {a_cpu:>9.2f}  {b_cpu:>9.3f}  "
              f"{a_cpu / b_cpu:>5.0f}x  {a_layout:>9}", flush=True)
    if args.quality:
        quality(args)


if __name__ == "__main__":
    main()
