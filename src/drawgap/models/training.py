"""One training loop for every generator family, on HuggingFace accelerate.

The loop owns what every family shares; the family (`models.base.Generator`) owns what varies: it gives its
optimizers and LR schedules (`configure_optimizers`) and does one step with them (`training_step`), the way
Lightning's `configure_optimizers` / `training_step` split them. No family is named here.

The same call runs on a CPU, one GPU, or many processes: `drawgap train ...` alone, or
`accelerate launch --multi_gpu --num_processes N -m drawgap.cli train ...` (on a machine without GPUs
drawgap picks accelerate's CPU backend, gloo, so that command runs N CPU processes; `torchrun` works too).
`--batch-size` is per process: a step sees batch_size x processes items.

- Optimisers and schedules: the family's (the diffusion models': Adam with a linear LR decay, SPEC.md 2.1,
  in `models/diffusion/family.py`). Each schedule is stepped before the optimizer step it applies to, so a
  resumed run whose total step count changed sets its LR afresh; a schedule that monitors a logged value
  (ReduceLROnPlateau) gets the previous step's. Schedules are checkpointed with the optimizers.
- EMA of the weights where the family asks for it (`uses_ema`; diffusers' `EMAModel`, warm-up
  1 - (1 + step)^-3/4, capped at 0.9999), saved as the run's generator: the paper used none, but averaged
  weights sample better after short CPU trainings.
- Mixed precision bf16 with `bf16=True` (autocast; weights, optimizer and EMA stay in float32).
- On a CPU, the process's malloc keeps freed memory (`training_core.keep_freed_memory`), so each step's
  activations reuse the last step's pages instead of page-faulting fresh ones in.
- Checkpoints every N steps and when stopped by SIGINT/SIGTERM or the time budget, each written into a
  temporary directory that is renamed into `checkpoints/step_XXXXXXXX` once complete, so the newest
  checkpoint directory is always whole. `resume=True` reloads model, EMA, optimizer and step and continues
  exactly: the randomness of step s is seeded from (seed, process, s) and the data order of epoch e from
  (seed, e), so a resumed run repeats the uninterrupted one bit for bit (tested).
- A non-finite loss stops the run at once with one line naming the step (`InputError`, exit code 2 from the
  CLI): nothing is checkpointed after it, so the last good checkpoint stays the one `--resume` continues.
- The run directory:

      RUN_DIR/generator.json, weights.safetensors   the EMA generator (`load_generator(RUN_DIR)`)
      RUN_DIR/train.json                             training options, dataset, provenance
      RUN_DIR/log.jsonl                              step, loss, every other scalar of the family's step, lr, speed
      RUN_DIR/checkpoints/step_XXXXXXXX/             accelerate state, ema.safetensors, state.json (resume)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from drawgap.errors import InputError
from drawgap.io import write_json_atomic
from drawgap.models.base import Generator
from drawgap.models.checkpoint_state import load_checkpoint, remove_stale_checkpoint_dirs, save_ema_state, save_schedule_states
from drawgap.models.class_augment import augment_class
from drawgap.options import given, model_fields, option
from drawgap.provenance import provenance
from drawgap.training_core import StopRequest, TimeBudget, append_log, keep_freed_memory, progress_bar

CHECKPOINTS = "checkpoints"


@dataclass
class TrainOptions:
    """The options every family's training shares (`drawgap train FAMILY` adds the family's own)."""

    steps: int | None = option(None, "Optimizer steps in all (the LR schedule ends there).")
    minutes: float | None = option(None, "Time budget of this run; without --steps the step count is estimated from the speed.")
    batch_size: int = option(64, "Items per step and process (fsdm: sets).")  # per process
    ema_max_decay: float = 0.9999
    ema_power: float = 0.75
    bf16: bool = option(False, "bfloat16 mixed precision.")
    seed: int = option(0, "Seed of the initial weights, data order and noise.")
    checkpoint_every: int = option(500, "Checkpoint every N steps (and on Ctrl-C / SIGTERM).")
    keep_checkpoints: int = 2
    snapshot_every: int = option(0, "Also keep the sampling weights (EMA) of every Nth step in RUN/snapshots/step_N, for "
                                 "learning curves (`drawgap sweep FAMILY --generator RUN --param training-step=all`); a multiple of "
                                 "--checkpoint-every; 0: none.")
    augment_class: bool = option(False, "QuickDraw-FS class augmentation (SPEC.md 1.2).")
    log_every: int = 10
    calibration_steps: int = 20  # steps timed to turn `minutes` into a step count
    cpu: bool = option(False, "Train on the CPU even where a GPU is present.")

    def check(self) -> "TrainOptions":
        if self.steps is None and self.minutes is None:
            raise InputError("expected --steps or --minutes (or both)", field="steps")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "keep_checkpoints"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise InputError(f"expected a positive integer, got {v}", field=name)
        if self.snapshot_every < 0 or (self.snapshot_every and self.snapshot_every % self.checkpoint_every):
            raise InputError(f"expected 0 or a multiple of checkpoint_every ({self.checkpoint_every}), got {self.snapshot_every}",
                             field="snapshot_every")
        if self.minutes is not None and not self.minutes > 0:
            raise InputError(f"expected a positive number of minutes, got {self.minutes}", field="minutes")
        return self


@dataclass
class TrainState:
    """Where a training stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    total_steps: int | None = None
    seconds: float = 0.0
    loss: float | None = None
    logged: dict = field(default_factory=dict)  # the last step's logged values, for monitoring schedules


@dataclass
class TrainResult:
    run_dir: Path
    state: TrainState
    stopped_by: str  # "steps", "minutes" or "signal"
    weights_sha256: str  # of the trained (not averaged) weights, identical on every process
    process_index: int = 0
    num_processes: int = 1


@dataclass
class StepRun:
    """What a family's `training_step` works with."""

    model: torch.nn.Module  # the prepared generator (DDP-wrapped on many processes): call it, so gradients sync
    optimizers: list  # the family's optimizers, prepared, in the order `configure_optimizers` gave them
    accelerator: Any
    state: TrainState  # step (before this one), total_steps

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def clip_grad_norm_(self, parameters, max_norm: float) -> torch.Tensor:
        return self.accelerator.clip_grad_norm_(parameters, max_norm)


class EpochPermutation(torch.utils.data.Sampler):
    """A new permutation each epoch, a function of (seed, epoch) only: the data order a resume relies on."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


# ------------------------------------------------------------------------------------------- checkpoints


def checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary directories are ignored)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / "state.json").exists())


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def read_state(checkpoint: Path) -> TrainState:
    try:
        return TrainState(**json.loads((checkpoint / "state.json").read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise InputError(f"unreadable training state ({exc})", path=checkpoint / "state.json") from None


def weights_sha256(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------- train


def train(
    generator: Generator,
    dataset,
    run_dir: str | os.PathLike,
    options: TrainOptions,
    *,
    family_options=None,
    resume: bool = False,
    progress: bool = True,
    dataset_info: dict | None = None,
    init_from: dict | None = None,
    callback: Callable[[TrainState], None] | None = None,
) -> TrainResult:
    """Train `generator` on a drawgap `Dataset` into `run_dir` (see the module docstring).

    family_options: an instance of the generator's `Options` (None: its defaults).
    With resume=True the generator must be the one the run directory describes (`load_generator`-built or
    constructed from its generator.json); the newest checkpoint then restores its weights.
    callback(state) runs after every optimizer step (custom logging, tests).
    init_from: where the generator's starting weights came from (`run_training(init_from=...)`), recorded in
    train.json.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    options.check()
    family_options = generator.Options() if family_options is None else family_options
    run_dir = Path(run_dir)
    latest = latest_checkpoint(run_dir)
    if resume and latest is None:
        raise InputError("nothing to resume: no complete checkpoint in the run directory", path=run_dir / CHECKPOINTS)
    if not resume and latest is not None:
        raise InputError("already holds a training; pass --resume to continue it or choose a new --out", path=run_dir)
    if dataset.image_size != generator.image_size:
        raise InputError(f"expected {generator.image_size}x{generator.image_size} drawings, got {dataset.image_size}", field="images")

    accelerator = Accelerator(
        mixed_precision="bf16" if options.bf16 else "no",
        cpu=options.cpu or not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)] if generator.find_unused_parameters else None,
    )
    main = accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes
    if accelerator.device.type == "cpu":
        keep_freed_memory()  # each step's activations are reused, not page-faulted in again (FSDM fp32: 1.7x)

    train_set = generator.training_set(dataset, seed=options.seed)
    order = EpochPermutation(len(train_set), options.seed)
    loader = torch.utils.data.DataLoader(train_set, batch_size=options.batch_size, sampler=order, drop_last=True)
    if len(loader) < world:
        raise InputError(
            f"expected at least {options.batch_size * world} training items for batch size {options.batch_size} "
            f"on {world} process(es), got {len(train_set)}",
            field="batch_size",
        )
    # the family's schedules read the state live (step, total_steps), so it is filled in place on resume
    state = TrainState(total_steps=options.steps)
    optimizers, schedules = generator.configure_optimizers(family_options, state)
    model, *optimizers, loader = accelerator.prepare(generator, *optimizers, loader)
    unwrapped = accelerator.unwrap_model(model)
    model.train()
    # The EMA and the schedules are saved and loaded by checkpoint_state, not registered with accelerate
    # (which unpickles registered objects on resume).
    ema = None
    if unwrapped.uses_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(unwrapped.parameters(), decay=options.ema_max_decay, use_ema_warmup=True, power=options.ema_power)
        ema.to(accelerator.device)
    run = StepRun(model, optimizers, accelerator, state)

    if resume:
        load_checkpoint(accelerator, latest, ema, [schedule.scheduler for schedule in schedules])
        saved = read_state(latest)
        for f in dataclasses.fields(TrainState):
            setattr(state, f.name, getattr(saved, f.name))
        state.total_steps = options.steps or saved.total_steps
        if main:
            _record_resume(run_dir, state, options)
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        recipe = {k: v for k, v in dataclasses.asdict(family_options).items() if k not in model_fields(type(family_options))}
        record = {"options": {**dataclasses.asdict(options), **recipe}, "dataset": dataset_info or {}, "processes": world,
                  **({"init_from": init_from} if init_from else {})}
        write_json_atomic(run_dir / "train.json", {**record, "provenance": provenance(record, options.seed)})
    if main:
        remove_stale_checkpoint_dirs(run_dir, (CHECKPOINTS, SNAPSHOTS))  # left by a run killed while saving
    accelerator.wait_for_everyone()

    def save_checkpoint() -> None:
        _save_checkpoint(accelerator, run_dir, state, ema, schedules, unwrapped, options, world)

    bar = progress_bar(progress and main, state.total_steps, state.step)
    budget = TimeBudget(options.minutes, options.calibration_steps)
    recent_losses: list[float] = []
    recent_values: dict[str, list[float]] = {}  # every other scalar the family's step returns, since the last log
    stopped_by = None
    with StopRequest() as stop:
        while stopped_by is None:
            # accelerate's loader re-sets its sampler's epoch from its own counter: keep both on ours
            loader.set_epoch(state.epoch)
            order.set_epoch(state.epoch)
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(state.epoch)
            epoch_loader = accelerator.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
            for batch in epoch_loader:
                if state.total_steps is not None and state.step >= state.total_steps:
                    stopped_by = "steps"
                    break
                step_started = time.monotonic()
                torch.manual_seed(_step_seed(options.seed, rank, state.step))
                if options.augment_class:
                    batch = augment_class(batch, unwrapped.class_keys)
                _step_schedules(schedules, state)
                logs = unwrapped.training_step(batch, run)
                if ema is not None:
                    ema.step(unwrapped.parameters())
                logged = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in logs.items()}
                loss = logged["loss"]
                diverged = torch.tensor([float(not math.isfinite(loss))], device=accelerator.device)
                if (accelerator.reduce(diverged, "sum") if world > 1 else diverged) > 0:  # every process stops here
                    _stop_diverged(accelerator, bar, run_dir, state.step + 1, loss)
                state.logged = logged
                state.step += 1
                state.batch_in_epoch += 1
                state.seconds += time.monotonic() - step_started
                recent_losses.append(loss)
                for key, value in logged.items():
                    if key != "loss":
                        recent_values.setdefault(key, []).append(value)
                if callback is not None:
                    callback(state)

                if state.step % options.log_every == 0:
                    state.loss = _mean_loss(accelerator, recent_losses)
                    values = _mean_values(accelerator, recent_values)
                    if main:
                        _log(run_dir, state, _learning_rates(optimizers), options.batch_size * world, values)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

                # turn a time budget into a step count once the speed is known (then the LR decays to 0 on time)
                if state.total_steps is None:
                    estimate = budget.estimate_total_steps(state.step)
                    if estimate is not None:  # every process takes the main one's
                        state.total_steps = int(_broadcast(torch.tensor([estimate], device=accelerator.device)))
                        if bar is not None:
                            bar.total = state.total_steps
                            bar.refresh()

                flags = torch.tensor([float(stop.signalled), float(budget.expired())], device=accelerator.device)
                flags = accelerator.reduce(flags, "sum") if world > 1 else flags
                if flags[0] > 0:
                    stopped_by = "signal"
                elif state.total_steps is not None and state.step >= state.total_steps:
                    stopped_by = "steps"  # the recipe is done, even when the budget ends on the same step (as critics)
                elif flags[1] > 0:
                    stopped_by = "minutes"
                if stopped_by is not None and recent_losses:  # every process stops at this same step
                    state.loss = _mean_loss(accelerator, recent_losses)
                if stopped_by is not None or state.step % options.checkpoint_every == 0:
                    save_checkpoint()
                if stopped_by is not None:
                    break
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
                continue
        if stopped_by == "steps" and (latest_checkpoint(run_dir) is None or read_state(latest_checkpoint(run_dir)).step != state.step):
            save_checkpoint()  # resumed at or beyond the final step
    if bar is not None:
        bar.close()
    accelerator.wait_for_everyone()
    result = TrainResult(run_dir, state, stopped_by, weights_sha256(unwrapped), rank, world)
    accelerator.end_training()
    _release_accelerate_state()
    return result


def _step_schedules(schedules: list, state: TrainState) -> None:
    """Before optimizer step `state.step`: step each schedule that is due (the first step keeps the LR the
    schedule was built with), a monitoring one with the previous step's logged value."""
    if state.step == 0:
        return
    for schedule in schedules:
        if state.step % schedule.every:
            continue
        with warnings.catch_warnings():  # a resumed run steps its schedules before this process's first optimizer step
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step\\(\\)` before", UserWarning)
            if schedule.monitor is None:
                schedule.scheduler.step()
            elif schedule.monitor in state.logged:
                schedule.scheduler.step(state.logged[schedule.monitor])


def _learning_rates(optimizers: list) -> float | list[float]:
    """The LR of each optimizer's first parameter group (one number for one optimizer, as log.jsonl had)."""
    lrs = [opt.param_groups[0]["lr"] for opt in optimizers]
    return lrs[0] if len(lrs) == 1 else lrs


def _release_accelerate_state() -> None:
    """accelerate keeps one global state per process, mixed precision included; clearing it (not the
    process group) lets one process train several models in turn, e.g. fp32 then bf16 (benchmarks, tests)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def _stop_diverged(accelerator, bar, run_dir: Path, step: int, loss: float):
    """A non-finite loss: stop before the optimizer's damage reaches a checkpoint, with one line naming the
    step; the run's checkpoints are left as they are, so `--resume` continues from the last good one."""
    if bar is not None:
        bar.close()
    latest = latest_checkpoint(run_dir)
    accelerator.end_training()
    _release_accelerate_state()
    kept = f"its last checkpoint, {latest.name}, is kept" if latest is not None else "no checkpoint was written yet"
    raise InputError(f"training stopped: the loss is {loss} at step {step} ({kept}); try a lower --lr, without --bf16, "
                     "or another --seed", path=run_dir, field="loss")


def _mean_values(accelerator, values: dict[str, list[float]]) -> dict[str, float]:
    """Mean of each logged value since the last log (over the steps that returned it, and the processes);
    empties the lists. A value some steps skip (a GAN's generator loss) is averaged over those that gave it."""
    keys = sorted(k for k, v in values.items() if v)
    if not keys:
        return {}
    means = torch.tensor([float(np.mean(values[k])) for k in keys], dtype=torch.float64, device=accelerator.device)
    means = accelerator.reduce(means, "mean")
    for v in values.values():
        v.clear()
    return {k: float(m) for k, m in zip(keys, means.tolist())}


def _mean_loss(accelerator, losses: list[float]) -> float:
    """Mean of the losses since the last log, over steps and processes; empties the list."""
    mean = float(accelerator.reduce(torch.tensor(np.mean(losses), device=accelerator.device), "mean"))
    losses.clear()
    return mean


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence(seed, spawn_key=(rank, step)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _broadcast(t: torch.Tensor) -> torch.Tensor:
    from accelerate.utils import broadcast

    return broadcast(t, from_process=0) if torch.distributed.is_available() and torch.distributed.is_initialized() else t


SNAPSHOTS = "snapshots"


def write_snapshot(run_dir: Path, step: int) -> Path:
    """RUN/snapshots/step_N: a copy of the generator the run directory holds now (generator.json, its weights
    and train.json: loadable as a run directory), through a temporary folder. Checkpoints are pruned to the
    newest few; snapshots are the sampling weights only (no optimizer), kept for learning curves."""
    from drawgap.models.base import CONFIG_FILE, WEIGHTS_FILE

    root = run_dir / SNAPSHOTS
    final, tmp = root / f"step_{step:08d}", root / f".step_{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in (WEIGHTS_FILE, CONFIG_FILE, "train.json"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, tmp / name)
    if final.exists():  # saved again at the same step (a run stopped there, then resumed)
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def snapshots(run_dir: str | os.PathLike) -> dict[int, Path]:
    """The complete snapshots of a run directory, by step (`--snapshot-every`)."""
    root = Path(run_dir) / SNAPSHOTS
    found = {}
    for path in sorted(root.glob("step_*")) if root.is_dir() else []:
        step = path.name[len("step_"):]
        if path.is_dir() and step.isdigit():
            found[int(step)] = path
    return found


def _save_checkpoint(accelerator, run_dir: Path, state: TrainState, ema, schedules: list, unwrapped: Generator,
                     options: TrainOptions, world: int) -> None:
    """Write checkpoints/step_N through a temporary directory, then the EMA generator into the run dir."""
    root = run_dir / CHECKPOINTS
    final = root / f"step_{state.step:08d}"
    tmp = root / f".step_{state.step:08d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every process writes its own RNG state; the main one the rest
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            save_ema_state(ema, tmp)
        save_schedule_states([schedule.scheduler for schedule in schedules], tmp)
        write_json_atomic(tmp / "state.json", dataclasses.asdict(state))
        if final.exists():  # stopped again at a step already saved
            shutil.rmtree(final)
        os.replace(tmp, final)
        if ema is not None:
            ema.store(unwrapped.parameters())
            ema.copy_to(unwrapped.parameters())
        training = {k: v for k, v in dataclasses.asdict(state).items() if k != "logged"}
        unwrapped.save(run_dir, extra={"training": {**training, "processes": world, "ema": ema is not None}},
                       seed=options.seed)
        if ema is not None:
            ema.restore(unwrapped.parameters())
        if options.snapshot_every and state.step % options.snapshot_every == 0:
            write_snapshot(run_dir, state.step)
        for old in checkpoints(run_dir)[: -options.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _log(run_dir: Path, state: TrainState, lr: float | list[float], global_batch: int, values: dict | None = None) -> None:
    """One line of log.jsonl: step, epoch, the mean loss and the mean of every other scalar the family's
    step returned since the last line (e.g. the VAE's kl, the GAN's critic loss and gradient penalty), lr, speed."""
    per_step = state.seconds / max(state.step, 1)
    reserved = ("step", "epoch", "loss", "lr", "items_per_second", "seconds")
    line = {
        "step": state.step,
        "epoch": state.epoch,
        "loss": round(state.loss, 6) if state.loss is not None else None,
        **{k: round(v, 6) if math.isfinite(v) else None for k, v in (values or {}).items() if k not in reserved},
        "lr": lr,
        "items_per_second": round(global_batch / per_step, 2) if per_step > 0 else None,
        "seconds": round(state.seconds, 2),
    }
    append_log(run_dir / "log.jsonl", line)


# ------------------------------------------------------------------------------------- from files (CLI)

# options a resumed run may change; the others are its recipe and stay as first given
RESUMABLE = ("steps", "minutes", "checkpoint_every", "log_every", "keep_checkpoints", "snapshot_every")


def run_training(
    name: str,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    generator_config: dict | None = None,
    resume: bool = False,
    init_from: str | os.PathLike | None = None,
    progress: bool = True,
    **options,
) -> TrainResult:
    """`drawgap train`: read the dataset file, build (or, with resume, rebuild) the generator, train it.

    options: `TrainOptions` fields and the family's `Options` fields; None means "not given" (the default,
    or on resume the run's value). generator_config: constructor arguments over those the options give.
    init_from: a new run that starts from another generator's weights (a shipped name, a run directory or an
    exported copy) of the same family, with that generator's network; optimizer, schedules and EMA start
    afresh (fine-tuning, or continuing a model whose checkpoints are gone). Tensors the source lacks (a shipped
    GAN's training critic) keep their seeded initial values.
    """
    from drawgap.weights import file_sha256
    from drawgap.data.formats import read_dataset
    from drawgap.models.base import CONFIG_FILE, read_generator_record
    from drawgap.models.registry import create_generator, generator_class

    family = generator_class(name)
    known = {f.name for f in dataclasses.fields(TrainOptions)} | {f.name for f in dataclasses.fields(family.Options)}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"unknown training options {sorted(unknown)} for {name}")
    loop_given, family_given = given(TrainOptions, options), given(family.Options, options)
    dataset = read_dataset(data)
    out = Path(out)
    info = {"path": str(data), "sha256": file_sha256(data),
            **{k: dataset.meta.get(k) for k in ("name", "split", "source", "image_size")}}
    if not resume and (out / CONFIG_FILE).is_file():
        # a run of another family is neither continued nor overwritten (its checkpoints would not load)
        other = read_generator_record(out)["generator"]
        if other != name:
            raise InputError(f"holds a {other} run, not a {name} one: `drawgap train {name}` neither continues nor "
                             "overwrites it; choose a new --out", path=out, field="generator")
    if resume and init_from is not None:
        raise InputError("--init-from starts a new run and --resume continues one; give one of them", field="--init-from")
    origin = None  # where a new run's weights come from (--init-from), for train.json
    if resume:
        record = read_generator_record(out)
        if record["generator"] != name:
            raise InputError(f"holds a {record['generator']} run, not a {name} one: `drawgap train {name} --resume` cannot "
                             f"continue it (resume it with `drawgap train {record['generator']}`)", path=out, field="generator")
        saved = _saved_options(out)
        recipe_given = {k: v for k, v in {**loop_given, **family_given}.items() if k not in model_fields(family.Options)}
        for key, value in recipe_given.items():
            if key not in RESUMABLE and saved.get(key) != value:
                raise InputError(f"a resumed run keeps its recipe: {key} is {saved.get(key)!r}, got {value!r}", field=f"--{key.replace('_', '-')}")
        generator = family(**record["config"])  # the network as the run built it: model options are not read again
        opts = TrainOptions(**{**given(TrainOptions, saved), **loop_given})
        family_opts = family.Options(**{**given(family.Options, saved), **family_given})
    else:
        opts = TrainOptions(**loop_given)
        family_opts = family.Options(**family_given)
        config = {**family.config_from_options(family_opts, dataset.image_size), **(generator_config or {})}
        source = None
        if init_from is not None:
            directory, source = _init_source(family, init_from, config, given=family_given)
            config = dict(source["config"])
        generator = create_generator(name, seed=opts.seed, **config)
        if source is not None:
            generator.load_weights_of(directory, source)
            origin = {"source": str(init_from), "generator": source["generator"], "weights_sha256": source.get("weights_sha256"),
                      "weights_storage": source.get("weights_storage", "float32")}
    return train(generator, dataset, out, opts, family_options=family_opts, resume=resume, progress=progress,
                 dataset_info=info, init_from=origin)


def _record_resume(run_dir: Path, state: TrainState, options: TrainOptions) -> None:
    """Append this invocation to train.json's `resumed` list: the first command alone does not say how a run
    that was interrupted and continued (often with another --steps or --minutes) was made."""
    path = run_dir / "train.json"
    if not path.is_file():
        return  # a run directory copied without it: nothing to add to
    record = json.loads(path.read_text())
    made = provenance()
    record.setdefault("resumed", []).append({
        "at_step": state.step, "total_steps": state.total_steps, "minutes": options.minutes,
        "command": made["command"], "created": made["created"],
    })
    write_json_atomic(path, record)


def _init_source(family, init_from, config: dict, given: dict) -> tuple[Path, dict]:
    """The run directory and generator.json of `--init-from`, checked: the same family, the given options that
    shape the network (`model=True`) and the data's image size equal to its."""
    from drawgap.models.base import read_generator_record
    from drawgap.models.registry import resolve_run_dir

    directory = resolve_run_dir(init_from)
    record = read_generator_record(directory)
    if record["generator"] != family.name:
        raise InputError(f"holds a {record['generator']} generator: `drawgap train {family.name} --init-from` needs a "
                         f"{family.name} one", path=directory, field="--init-from")
    source_config = record["config"]
    for key in set(given) & model_fields(family.Options):  # config holds the given value, source_config the network's
        if key in config and source_config.get(key) != config[key]:
            raise InputError(f"the network comes from --init-from, whose {key} is {source_config.get(key)!r}; got {config[key]!r}",
                             field=f"--{key.replace('_', '-')}")
    if source_config.get("image_size") != config["image_size"]:
        raise InputError(f"draws {source_config.get('image_size')} px drawings; the training data are {config['image_size']} px",
                         path=directory, field="--init-from")
    return directory, record


def _saved_options(run_dir: Path) -> dict:
    """The options a run was started with (train.json), the loop's and its family's."""
    path = run_dir / "train.json"
    try:
        saved = json.loads(path.read_text())["options"]
        if not isinstance(saved, dict):
            raise TypeError("options is not a mapping")
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"unreadable training record ({exc})", path=path) from None
    return saved
