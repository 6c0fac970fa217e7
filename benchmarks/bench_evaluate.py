"""Speed and memory of `drawgap evaluate` at QuickDraw-FS scale (SPEC.md 7): 115 classes x 500 drawings at
48x48 (57,500 drawings, synthetic, made here), Omniglot-size critics (random init: speed does not depend on
the weights), 500 queries per class, 10 bins, 1000 bootstrap resamples.

Prints drawings per second, peak resident memory (ru_maxrss: torch allocates outside tracemalloc's view),
and the ratio of the measured time to the time the critics' floating-point operations need at this
machine's measured matrix-multiply rate (the "flop bound"). Target on 2 CPU cores: < 90 s, < 2 GB, < 2x.

    python benchmarks/bench_evaluate.py [--threads 2] [--repeats 3] [--precision fp32|bf16]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def synthetic_samples(n_classes=115, per_class=500, size=48, seed=0):
    """Exemplars = a few random thick strokes; samples = the exemplar shifted by up to 3 px with 2 % of
    pixels flipped. uint8, ink 255, like a samples file."""
    from drawgap.data.formats import Samples

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    exemplars = np.zeros((n_classes, size, size), np.uint8)
    for c in range(n_classes):
        for _ in range(rng.integers(2, 5)):
            (x0, y0), (x1, y1) = rng.uniform(6, size - 6, (2, 2))
            t = np.clip(((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / max((x1 - x0) ** 2 + (y1 - y0) ** 2, 1e-6), 0, 1)
            exemplars[c][np.hypot(xx - x0 - t * (x1 - x0), yy - y0 - t * (y1 - y0)) < 1.8] = 255
    samples = np.empty((n_classes, per_class, size, size), np.uint8)
    for c in range(n_classes):
        shifts = rng.integers(-3, 4, (per_class, 2))
        for i, (dy, dx) in enumerate(shifts):
            samples[c, i] = np.roll(exemplars[c], (dy, dx), axis=(0, 1))
        flips = rng.random((per_class, size, size)) < 0.02
        samples[c][flips] = 255 - samples[c][flips]
    return Samples(samples, exemplars, np.array([f"class{c:03d}" for c in range(n_classes)]), {"generator": "synthetic"})


def matmul_gflops(threads: int, n=2048, repeats=5) -> float:
    """This machine's fp32 matrix-multiply rate on `threads` cores: the best of one matmul split over the
    threads by torch (OpenMP) and of one single-threaded matmul per Python thread at once (how evaluate
    runs its critics). The higher rate makes the stricter bound."""
    a, b = torch.randn(n, n), torch.randn(n, n)

    def best_time(fn) -> float:
        fn()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return best

    torch.set_num_threads(threads)
    omp = 2 * n**3 / best_time(lambda: a @ b) / 1e9
    torch.set_num_threads(1)
    with ThreadPoolExecutor(threads) as pool:
        per_thread = threads * 2 * n**3 / best_time(lambda: list(pool.map(lambda _: a @ b, range(threads)))) / 1e9
    torch.set_num_threads(threads)
    return max(omp, per_thread)


def critic_flops_per_drawing(simclr, protonet, image_size: int) -> float:
    """Conv and linear FLOPs of both critics for one drawing (FlopCounterMode; 2 per multiply-add)."""
    image = torch.zeros(1, image_size, image_size, dtype=torch.uint8)
    with FlopCounterMode(display=False) as counter:
        simclr.features(image)
        protonet.embed(image)
    return float(counter.get_total_flops())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--classes", type=int, default=115)
    parser.add_argument("--per-class", type=int, default=500)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    from drawgap.critics import ProtoNetCritic, SimCLRCritic
    from drawgap.metrics import evaluate

    torch.manual_seed(0)
    simclr, protonet = SimCLRCritic("omniglot"), ProtoNetCritic("omniglot")  # 50 px: drawings are resized
    samples = synthetic_samples(args.classes, args.per_class)
    n_drawings = samples.n_classes * (samples.per_class + 1)  # exemplars are embedded too

    gflops = matmul_gflops(args.threads)
    flops = critic_flops_per_drawing(simclr, protonet, samples.image_size) * n_drawings
    bound = flops / (gflops * 1e9)

    times, cpu_times = [], []
    for _ in range(args.repeats):
        t, cpu = time.perf_counter(), time.process_time()
        metrics = evaluate(samples, simclr=simclr, protonet=protonet, queries=500, bootstrap=1000,
                           precision=args.precision)
        times.append(time.perf_counter() - t)
        cpu_times.append(time.process_time() - cpu)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: kilobytes
    median = statistics.median(times)

    print(f"machine: {args.threads} threads, fp32 matmul {gflops:.1f} GFLOP/s; torch {torch.__version__}")
    print(f"workload: {samples.n_classes} classes x {samples.per_class} drawings at {samples.image_size}px "
          f"(+ exemplars) -> critics at {simclr.image_size}px, precision {args.precision}")
    print(f"critic FLOPs: {flops / n_drawings / 1e6:.1f} MFLOP per drawing, {flops / 1e12:.2f} TFLOP in all "
          f"-> flop bound {bound:.1f} s")
    print(f"time: median {median:.1f} s of {len(times)} ({', '.join(f'{t:.1f}' for t in times)}); "
          f"process CPU time {statistics.median(cpu_times):.1f} s (all threads); load average {os.getloadavg()[0]:.1f}")
    print(f"throughput: {samples.n_classes * samples.per_class / median:.0f} drawings/s")
    print(f"peak memory (ru_maxrss): {peak_gb:.2f} GB")
    print(f"ratio to flop bound: {median / bound:.2f}x")
    print(f"sanity: diversity {metrics['diversity']:.3f}, recognizability {metrics['recognizability']:.1f}%")


if __name__ == "__main__":
    sys.exit(main())
