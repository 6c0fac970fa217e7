"""Training speed of the generator families, and of the input pipeline that feeds them.

For each configuration (family, denoiser preset, batch size) and precision (fp32; bf16 autocast where the
device runs it natively):
- compute: optimizer steps per second and drawings per second of the family's own training step
  (`Generator.training_step`: forward, loss, backward, Adam) on a batch already on the device;
- the FLOP bound: the step's FLOPs (FlopCounterMode: forward, backward) over the device's measured
  matrix-multiply rate at that precision, and the ratio of the measured step time to it;
- input: how many training items per second the family's training set produces in one process (what the
  training loop's DataLoader, without worker processes, delivers), the ceiling of drawings per second when
  the compute is faster than that.
Medians of --repeats timings of --steps steps each. Prints one table; nothing is written.

    python benchmarks/bench_training.py                          # this machine's CPU, 2 threads
    python benchmarks/bench_training.py --device cuda --steps 50 # a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from drawgap.data.strokes import StrokesConfig, build_strokes
from drawgap.importance.diffusion_maps import resolve_precision
from drawgap.models.registry import create_generator, generator_class

# (family, preset, batch): the shipped recipes (lean default, batch 32; FSDM sets of 5, batch 32) and the
# paper's (ConvNeXt U-Net, batch 128)
CONFIGS = [("cfgdm", "default", 32), ("ddpm", "default", 32), ("fsdm", "default", 32), ("cfgdm", "paper", 128)]


class _Run:
    """The part of the training loop's StepRun a family's training_step uses, without accelerate."""

    def __init__(self, model, optimizers, autocast):
        self.model, self.optimizers, self.autocast = model, optimizers, autocast

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, parameters, max_norm):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_tflops(device, dtype, n=4096, repeats=5) -> float:
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def build(family, preset, image_size, device):
    cls = generator_class(family)
    config = cls.config_from_options(cls.Options(preset=preset), image_size)
    return create_generator(family, seed=0, **config).to(device)


def batch_of(gen, dataset, batch_size, device):
    items = gen.training_set(dataset, seed=0)
    batch = torch.utils.data.default_collate([items[i] for i in range(batch_size)])
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def step_flops(gen, batch, autocast) -> float:
    with FlopCounterMode(display=False) as counter, autocast():
        loss = gen(batch)
        loss.backward()
    gen.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def time_steps(gen, batch, steps, repeats, autocast, device) -> list[float]:
    optimizer = torch.optim.Adam(gen.parameters(), lr=1e-4)
    run = _Run(gen, [optimizer], autocast)
    gen.train()
    for _ in range(3):  # warm-up (cuDNN autotuning, oneDNN primitives)
        with autocast():
            gen.training_step(batch, run)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            with autocast():
                gen.training_step(batch, run)
        _sync(device)
        times.append((time.perf_counter() - t0) / steps)
    return times


def input_rate(gen, dataset, n=2000) -> float:
    """Training items per second from the family's training set in this process (the loop's DataLoader)."""
    items = gen.training_set(dataset, seed=0)
    loader = torch.utils.data.DataLoader(items, batch_size=128, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    t0, count = time.perf_counter(), 0
    for batch in loader:
        count += len(next(iter(batch.values())))
        if count >= n:
            break
    return count / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", default=",".join(f"{f}:{p}:{b}" for f, p, b in CONFIGS),
                    help="family:preset:batch, comma-separated")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dataset = build_strokes(StrokesConfig(n_classes=40, per_class=20, seed=0))["train"]
    precisions = ["fp32", "bf16"] if resolve_precision("auto", device) == "bf16" else ["fp32"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"device: {name}; torch {torch.__version__}; medians of {args.repeats} x {args.steps} steps")
    peak = {p: matmul_tflops(device, torch.float32 if p == "fp32" else torch.bfloat16) for p in precisions}
    print("matmul rate: " + ", ".join(f"{p} {v:.2f} TFLOP/s" for p, v in peak.items()))
    print(f"{'family':<7} {'preset':<8} {'batch':>5} {'prec':<5} {'steps/s':>8} {'drawings/s':>11} "
          f"{'GFLOP/step':>10} {'x bound':>8} {'input items/s':>13}")
    for spec in args.configs.split(","):
        family, preset, batch_size = spec.split(":")
        batch_size = int(batch_size)
        gen = build(family, preset, dataset.image_size, device)
        batch = batch_of(gen, dataset, batch_size, device)
        items = input_rate(gen, dataset)
        for prec in precisions:
            def autocast(prec=prec):
                return torch.autocast(device.type, dtype=torch.bfloat16, enabled=prec == "bf16")
            flops = step_flops(gen, batch, autocast)
            per_step = statistics.median(time_steps(gen, batch, args.steps, args.repeats, autocast, device))
            drawings = batch_size * gen.config.get("set_size", 1)  # FSDM: sets of set_size drawings
            bound = flops / (peak[prec] * 1e12)
            print(f"{family:<7} {preset:<8} {batch_size:>5} {prec:<5} {1 / per_step:>8.2f} {drawings / per_step:>11.0f} "
                  f"{flops / 1e9:>10.2f} {per_step / bound:>8.1f} {items:>13.0f}")
        del gen, batch
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
