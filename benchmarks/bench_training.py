"""Training speed of every shipped family's training step and of the critics', and of the input that feeds them.

For each configuration (family, preset, batch size) and precision (fp32; bf16 autocast where the device runs
it natively):
- compute: optimizer steps per second and drawings per second of the family's own training step
  (`Generator.training_step` with the optimizers of its `configure_optimizers`: forward, loss, backward,
  optimizer step) on a batch already on the device. A DA-GAN loop step is one critic step and every
  `n_critic`-th (5th) also a generator step: it is timed over whole cycles of `n_critic` loop steps and
  reported per loop step (the unit of `--steps` and of its log). A critic's step is `CriticTrainer`'s
  (`critics.training.critic_loss`, backward, optimizer step; SimCLR's augmentation included);
- the FLOP bound: the FLOPs of the same step (FlopCounterMode over the whole step, a DA-GAN's cycle
  averaged per loop step, its gradient penalty's double backward included) over the device's matrix-multiply
  rate measured in the same run at that precision, and the ratio of the measured step time to it;
- input: how many training items per second the family's training set produces in one process (what the
  training loop's DataLoader, without worker processes, delivers; FSDM and VAE-NS items are sets), the ceiling
  of the step rate's items when the compute is faster than that. For the critics: drawings per second of the
  step's own input (SimCLR: the batch's indices, gather and two augmented views; ProtoNet: the episode).
Drawings per step: the drawings a step trains on (FSDM, VAE-NS: sets x set size; ProtoNet: ways x (1 +
queries); SimCLR: the batch, each drawing seen as two views). On a CPU the process's malloc keeps freed
memory, as both training loops set it (`training_core.keep_freed_memory`); `--default-malloc` times glibc's
default instead (the loops before it, for A/B runs). Medians of --repeats timings of --steps steps each,
after --warmup steps. Prints one table; nothing is written.

    python benchmarks/bench_training.py                          # this machine's CPU, 2 threads
    python benchmarks/bench_training.py --device cuda --steps 50 # a GPU
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from drawgap.data.strokes import StrokesConfig, build_strokes
from drawgap.importance.diffusion_maps import resolve_precision
from drawgap.models.registry import create_generator, generator_class
from drawgap.models.training import TrainState
from drawgap.training_core import keep_freed_memory

# (family, preset, batch) of the shipped recipes (models/weights/omniglot-*/train.json, critics/weights/
# omniglot-*/TRAINING.md): the lean diffusion models and FSDM (sets of 5) at batch 32, VAE-STN 32, VAE-NS 8
# sets of 10, the DA-GANs 16; SimCLR batch 256 and ProtoNet 60-way 5-query episodes at 50 px ("omniglot" arch);
# and the paper's diffusion recipe (ConvNeXt U-Net, batch 128). The baselines have no presets: "default" is
# their options' defaults, the shipped configs. A critic's preset is its arch, its batch the ways for ProtoNet.
CONFIGS = [("cfgdm", "default", 32), ("ddpm", "default", 32), ("fsdm", "default", 32), ("vae-stn", "default", 32),
           ("vae-ns", "default", 8), ("dagan-un", "default", 16), ("dagan-rn", "default", 16),
           ("simclr", "omniglot", 256), ("protonet", "omniglot", 60), ("cfgdm", "paper", 128)]
CRITICS = ("simclr", "protonet")


class _Run:
    """The part of the training loop's StepRun a family's training_step uses, without accelerate."""

    def __init__(self, model, optimizers, state):
        self.model, self.optimizers, self.state = model, optimizers, state

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, parameters, max_norm):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


class GeneratorStep:
    """One loop step of a generator family: `training_step` with its own optimizers, the loop's step counter."""

    def __init__(self, family: str, preset: str, batch_size: int, dataset, device):
        cls = generator_class(family)
        has_presets = "preset" in cls.Options.__dataclass_fields__
        if preset != "default" and not has_presets:
            raise SystemExit(f"{family} has no presets; use {family}:default:BATCH")
        options = cls.Options(preset=preset) if has_presets else cls.Options()
        self.gen = create_generator(family, seed=0, **cls.config_from_options(options, dataset.image_size)).to(device)
        self.state = TrainState()
        optimizers, _ = self.gen.configure_optimizers(options, self.state)
        self.run = _Run(self.gen, optimizers, self.state)
        self.training_set = self.gen.training_set(dataset, seed=0)
        items = torch.utils.data.default_collate([self.training_set[i] for i in range(batch_size)])
        self.batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in items.items()}
        drawings = self.batch[self.gen.class_keys[0]]  # [B, 1, H, W] drawings or [B, K, 1, H, W] sets
        self.drawings = drawings.numel() // drawings.shape[-1] // drawings.shape[-2]
        self.cycle = getattr(self.gen, "n_critic", 1)  # a DA-GAN's generator steps once per n_critic loop steps
        self.gen.train()

    def set_precision(self, prec: str) -> None:
        """Nothing to do: the generators' loop trains one layout at either precision (autocast does the rest)."""

    def __call__(self) -> None:
        self.gen.training_step(self.batch, self.run)
        self.state.step += 1

    def input_rate(self, n=2000) -> float:
        """Training items per second from the family's training set in this process (the loop's DataLoader)."""
        loader = torch.utils.data.DataLoader(self.training_set, batch_size=128, shuffle=True, drop_last=True,
                                             generator=torch.Generator().manual_seed(0))
        t0, count = time.perf_counter(), 0
        for batch in loader:
            count += len(next(iter(batch.values())))
            if count >= n:
                break
        return count / (time.perf_counter() - t0)


class CriticStep:
    """One step of `CriticTrainer`: `critic_loss`, zero_grad, backward, the kind's optimizer (no schedule)."""

    def __init__(self, kind: str, arch: str, batch_size: int, dataset, device):
        from drawgap.critics.augment import SimCLRAugment
        from drawgap.critics.registry import build_critic
        from drawgap.critics.training import TrainConfig, critic_optimizer
        from drawgap.data.episodes import ExemplarEpisodes

        size = {"simclr": "batch_size", "protonet": "ways"}[kind]
        self.config = TrainConfig(kind=kind, arch=arch, **{size: batch_size}).resolved()
        self.critic = build_critic({"kind": kind, "arch": arch, "threshold": self.config.threshold}).to(device)
        self.images = self.critic.prepare(dataset.images).to(torch.uint8).to(device)
        if kind == "simclr":
            self.source = SimCLRAugment(self.critic.image_size, self.config.strength, self.config.threshold)
            self.drawings = batch_size
        else:
            self.source = ExemplarEpisodes(dataset.labels, dataset.exemplars, self.config.ways, self.config.queries)
            self.drawings = self.config.ways * (1 + self.config.queries)
        self.optimizer = critic_optimizer(self.critic, self.config)
        self.step, self.cycle = 0, 1
        self.critic.train()

    def set_precision(self, prec: str) -> None:
        """bf16 trains a channels-last critic, fp32 a contiguous one, as `CriticTrainer` does."""
        self.config.bf16 = prec == "bf16"
        self.critic.to(memory_format=torch.channels_last if self.config.bf16 else torch.contiguous_format)

    def __call__(self) -> None:
        from drawgap.critics.training import critic_loss

        loss = critic_loss(self.critic, self.config, self.images, self.step, self.source)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1

    def input_rate(self, n=2000) -> float:
        """Drawings per second of the step's input alone (batch indices, gather, SimCLR's two views)."""
        from drawgap.critics.training import simclr_batch

        t0, count, step = time.perf_counter(), 0, 0
        while count < n:
            if self.config.kind == "simclr":
                idx = torch.as_tensor(simclr_batch(step, len(self.images), self.config.batch_size, 0))
                x = self.images[idx].float()
                torch.cat([self.source(x), self.source(x)])
            else:
                ep = self.source.episode(step)
                self.images[torch.as_tensor([*ep.support, *ep.queries])].float()
            count, step = count + self.drawings, step + 1
        return count / (time.perf_counter() - t0)


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


class _NoModuleTracker:
    """Counts every op under "Global" only. FlopCounterMode's own ModuleTracker hooks the backward of module
    inputs, which fails inside `torch.autograd.grad` on a leaf (a DA-GAN's gradient penalty)."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def step_flops(step, autocast) -> float:
    """FLOPs per loop step, counted over one whole cycle of steps (a DA-GAN's n_critic)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracker()
    with counter:
        for _ in range(step.cycle):
            with autocast():
                step()
    return float(counter.get_total_flops()) / step.cycle


def time_steps(step, steps, repeats, warmup, autocast, device) -> list[float]:
    """Seconds per loop step, `repeats` times over `steps` steps (rounded up to whole cycles)."""
    steps = math.ceil(steps / step.cycle) * step.cycle
    for _ in range(warmup * step.cycle):  # warm-up (cuDNN autotuning, oneDNN primitives)
        with autocast():
            step()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            with autocast():
                step()
        _sync(device)
        times.append((time.perf_counter() - t0) / steps)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps (cycles) before the timings")
    ap.add_argument("--precisions", default=None, help="fp32,bf16 [both where bf16 is native, else fp32]")
    ap.add_argument("--default-malloc", action="store_true",
                    help="glibc's default malloc settings instead of the training loops' keep_freed_memory (A/B)")
    ap.add_argument("--configs", default=",".join(f"{f}:{p}:{b}" for f, p, b in CONFIGS),
                    help="family:preset:batch, comma-separated (critics: simclr:ARCH:BATCH, protonet:ARCH:WAYS)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    kept = device.type == "cpu" and not args.default_malloc and keep_freed_memory()
    specs = [(f, p, int(b)) for f, p, b in (spec.split(":") for spec in args.configs.split(","))]
    dataset = build_strokes(StrokesConfig(n_classes=40, per_class=20, seed=0))["train"]
    if any(f in CRITICS for f, _, _ in specs):  # 60-way episodes need 60 training classes
        critic_data = build_strokes(StrokesConfig(n_classes=80, per_class=20, seed=0))["train"]
    native = ["fp32", "bf16"] if resolve_precision("auto", device) == "bf16" else ["fp32"]
    precisions = args.precisions.split(",") if args.precisions else native
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"device: {name}; torch {torch.__version__}; medians of {args.repeats} x {args.steps} steps; "
          f"malloc {'keeps freed memory' if kept else 'default'}")
    peak = {p: matmul_tflops(device, torch.float32 if p == "fp32" else torch.bfloat16) for p in precisions}
    print("matmul rate: " + ", ".join(f"{p} {v:.2f} TFLOP/s" for p, v in peak.items()), flush=True)
    print(f"{'family':<8} {'preset':<8} {'batch':>5} {'prec':<5} {'steps/s':>8} {'drawings/s':>11} "
          f"{'GFLOP/step':>10} {'x bound':>8} {'input items/s':>13}", flush=True)
    for family, preset, batch_size in specs:
        if family in CRITICS:
            step = CriticStep(family, preset, batch_size, critic_data, device)
        else:
            step = GeneratorStep(family, preset, batch_size, dataset, device)
        items = step.input_rate()
        for prec in precisions:
            def autocast(prec=prec):
                return torch.autocast(device.type, dtype=torch.bfloat16, enabled=prec == "bf16")
            step.set_precision(prec)
            flops = step_flops(step, autocast)
            per_step = statistics.median(time_steps(step, args.steps, args.repeats, args.warmup, autocast, device))
            bound = flops / (peak[prec] * 1e12)
            print(f"{family:<8} {preset:<8} {batch_size:>5} {prec:<5} {1 / per_step:>8.2f} {step.drawings / per_step:>11.0f} "
                  f"{flops / 1e9:>10.2f} {per_step / bound:>8.1f} {items:>13.0f}", flush=True)
        del step
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
