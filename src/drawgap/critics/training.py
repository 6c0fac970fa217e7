"""Training the critics (SPEC.md 3.1 and 3.2), with progress, checkpoints and exact resume.

- SimCLR: batches of drawings, two augmented views each (`SimCLRAugment`), NT-Xent (temperature 0.5) on the
  projections; RMSprop(lr 1e-3) as in the reference (Adam offered), no LR schedule.
- ProtoNet: 60-way 1-shot 5-query episodes whose support is each class's exemplar; NLL of
  log_softmax(-squared distance); Adam(lr 1e-3), LR halved every quarter of the run (the reference: every
  20 of 80 epochs).

Randomness: batch t and episode t are pure functions of (seed, t); augmentations draw from torch's global
RNG, whose state is checkpointed. A checkpoint (weights, optimizer, scheduler, step, RNG state) is written
atomically every `checkpoint_every` steps and on Ctrl-C / SIGTERM, and `resume=True` continues from it to
the same result as an uninterrupted run (bit for bit on the CPU in fp32).

What this loop shares with the generators' (`models/training.py`) comes from `drawgap.training_core`: a
signal is a request to stop after the current step (with a checkpoint; a second one stops at once), the
time budget `minutes` (without `steps`, the step count is estimated from the speed after 20 timed steps;
ProtoNet's LR steps then come from that count, never before the step of the estimate), the progress bar, the log file, and checkpoint files
written atomically and read with `weights_only=True`. The random numbers a step draws are this loop's own,
in the order they always were, so the shipped critics' recorded validations reproduce.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from drawgap.critics.augment import STRENGTHS, SimCLRAugment
from drawgap.critics.base import Critic
from drawgap.critics.protonet import squared_distances
from drawgap.critics.registry import build_critic, lineage_record, save_critic
from drawgap.critics.simclr import nt_xent
from drawgap.critics.validation import acceptance_metrics
from drawgap.data.episodes import ExemplarEpisodes
from drawgap.data.formats import Dataset, read_dataset
from drawgap.errors import InputError
from drawgap.training_core import (StopRequest, TimeBudget, append_log, keep_freed_memory, load_checkpoint_file, progress_bar,
                                   save_checkpoint_file)
from drawgap.weights import file_sha256

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.jsonl"

# Reference defaults per kind (SPEC.md 3.1 / 3.2): 100 epochs of batch 448 over the 29k Omniglot training
# drawings is ~6,600 SimCLR steps; 80 epochs of 100 episodes is 8,000 ProtoNet steps.
KIND_DEFAULTS = {
    "simclr": dict(steps=6600, optimizer="rmsprop", batch_size=448),
    "protonet": dict(steps=8000, optimizer="adam", batch_size=None),
}
OPTIMIZERS = ("rmsprop", "adam")
# Options that only one kind uses (left out of the other kind's command line).
KIND_ONLY = {
    "simclr": {"batch_size", "temperature", "strength"},
    "protonet": {"ways", "queries", "val_ways", "val_episodes"},
}


@dataclass
class TrainConfig:
    """Everything that decides a training run. `None` fields take the kind's reference default."""

    kind: str
    arch: str = "omniglot"
    image_size: int | None = None
    threshold: float = 0.5
    steps: int | None = None
    # Time budget of this run (a budget, not the recipe: the recorded command gives the steps it reached).
    # Without `steps`, the step count is estimated from the speed; with both, it stops at whichever comes first.
    minutes: float | None = None
    lr: float = 1e-3
    optimizer: str | None = None
    seed: int = 0
    # Start from a trained critic's weights (a shipped name or a folder) instead of a random init: a
    # fine-tuning run with its own optimizer and schedule, e.g. a decaying LR after a constant-LR plateau.
    init_from: str | None = None
    bf16: bool = False
    device: str = "cpu"
    threads: int = 2
    # SimCLR
    batch_size: int | None = None
    temperature: float = 0.5
    strength: str = "normal"
    # ProtoNet
    ways: int = 60
    queries: int = 5
    # LR step schedule (multiply by lr_gamma every lr_step steps): ProtoNet's default is steps/4; SimCLR
    # has none unless asked (the reference trains it at a constant LR).
    lr_step: int | None = None
    lr_gamma: float = 0.5
    # validation and checkpoints
    val_every: int = 500
    val_ways: int = 20
    val_episodes: int = 1000
    checkpoint_every: int = 200

    def resolved(self) -> "TrainConfig":
        """A copy with the kind's defaults filled in and the options checked."""
        if self.kind not in KIND_DEFAULTS:
            raise InputError(f"expected kind one of {', '.join(KIND_DEFAULTS)}, got {self.kind!r}", field="kind")
        c = dataclasses.replace(self)
        for key, value in KIND_DEFAULTS[self.kind].items():
            if getattr(c, key) is None and not (key == "steps" and c.minutes is not None):
                setattr(c, key, value)  # with a time budget and no steps, the loop estimates the steps
        if c.minutes is not None and not c.minutes > 0:
            raise InputError(f"expected a positive number of minutes, got {c.minutes}", field="minutes")
        if c.kind == "protonet" and c.lr_step is None and c.steps is not None:
            c.lr_step = max(1, c.steps // 4)
        if c.optimizer not in OPTIMIZERS:
            raise InputError(f"expected optimizer one of {', '.join(OPTIMIZERS)}, got {c.optimizer!r}", field="optimizer")
        if c.strength not in STRENGTHS:
            raise InputError(f"expected strength one of {', '.join(STRENGTHS)}, got {c.strength!r}", field="strength")
        for key in ("steps", "threads", "checkpoint_every", "ways", "queries"):
            if getattr(c, key) is not None and getattr(c, key) < 1:
                raise InputError(f"expected a positive integer, got {getattr(c, key)}", field=key)
        if c.kind == "simclr" and c.batch_size < 2:
            raise InputError(f"expected batch_size >= 2, got {c.batch_size}", field="batch_size")
        return c

    def command_line(self, data, out, val=None) -> str:
        """The `drawgap critics train` command that reproduces this run."""
        args = ["drawgap", "critics", "train", self.kind, "--data", str(data), "--out", str(out)]
        if val is not None:
            args += ["--val", str(val)]
        other_kinds = set().union(*(fields for kind, fields in KIND_ONLY.items() if kind != self.kind))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in {"kind", "device", "threads", "checkpoint_every", "minutes"} | other_kinds or value is None:
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                args += [flag] if value else []
            else:
                args += [flag, str(value)]
        return shlex.join(args)


# ---------------------------------------------------------------------------------------------- batches


def simclr_batch(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of batch `step`: epochs are seeded permutations cut into full batches (the remainder dropped)."""
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * batch_size : (k + 1) * batch_size]


def _prepared_images(critic: Critic, ds: Dataset, device) -> torch.Tensor:
    # Equalize once; keep 0/1 as uint8 (a quarter of the memory of float32) and convert per batch.
    x = torch.cat([critic.prepare(ds.images[i : i + 4096]) for i in range(0, len(ds.images), 4096)])
    return x.to(torch.uint8).to(device)


# ------------------------------------------------------------------------------------------- one step


def critic_loss(critic: Critic, config: TrainConfig, images: torch.Tensor, step: int, source) -> torch.Tensor:
    """The loss of training step `step` (`CriticTrainer`'s, and what benchmarks/bench_training.py times).

    images: the prepared training drawings, uint8 0/1 [N, 1, S, S] on the critic's device; source: the
    `SimCLRAugment` (simclr) or the `ExemplarEpisodes` (protonet). Under `config.bf16` the critic is expected
    in channels-last layout, as `CriticTrainer` puts it.
    """
    device = images.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
        if config.kind == "simclr":
            idx = torch.as_tensor(simclr_batch(step, len(images), config.batch_size, config.seed), device=device)
            x = images[idx].float()
            views = critic_layout(torch.cat([source(x), source(x)]), config.bf16)
            z = critic.project(critic(views)).float()
            return nt_xent(z[: len(x)], z[len(x) :], config.temperature)
        ep = source.episode(step)
        idx = torch.as_tensor(np.concatenate([ep.support, ep.queries]), device=device)
        emb = critic(critic_layout(images[idx].float(), config.bf16)).float()
        logits = -squared_distances(emb[config.ways :], emb[: config.ways])
        return F.cross_entropy(logits, torch.as_tensor(ep.targets, device=device))


def critic_optimizer(critic: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The kind's optimizer over the critic's parameters (RMSprop as the reference, or Adam), no schedule."""
    opt = torch.optim.RMSprop if config.optimizer == "rmsprop" else torch.optim.Adam
    return opt(critic.parameters(), lr=config.lr)


def critic_layout(x: torch.Tensor, bf16: bool) -> torch.Tensor:
    # bf16 convolutions on the CPU run about twice as fast in channels-last layout (measured).
    return x.contiguous(memory_format=torch.channels_last) if bf16 else x


# ------------------------------------------------------------------------------------------- validation


_NO_LR_STEP = 2**62  # a StepLR step size that never comes: the schedule waits for its estimated one


def headline(metrics: dict) -> str:
    """The metric shown in the progress bar."""
    for key, value in metrics.items():
        if "accuracy" in key:
            return f"{value:.2f}%"
    return ""


# ------------------------------------------------------------------------------------------- the loop


class CriticTrainer:
    """Trains one critic on a dataset file into `out`: checkpoint.pt, train_log.jsonl, then the critic
    (model.safetensors + config.json). `fit()` returns self; the trained critic is `critic_`."""

    def __init__(self, config: TrainConfig, data, out, val=None, resume: bool = False,
                 on_step: Callable[[int, float], None] | None = None, progress: bool = True):
        self.data, self.out, self.val = Path(data), Path(out), None if val is None else Path(val)
        self.resume, self.on_step, self.progress = resume, on_step, progress
        self.given_steps = config.steps
        self.config = config.resolved()
        self.stopped_by: str | None = None  # "steps", "minutes" or "signal", once fit() ends

    # -- checkpoints

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_FILE

    def _save_checkpoint(self, step: int) -> None:
        state = {
            "config": dataclasses.asdict(self.config),
            "step": step,
            "model": self.critic_.state_dict(),
            "optimizer": self.optimizer_.state_dict(),
            "scheduler": self.scheduler_.state_dict() if self.scheduler_ else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "data_sha256": self.data_hash_,
            "data_content_sha256": self.data_content_hash_,
            "val_metrics": self.val_metrics_,
            "parent": self.parent_,
        }
        save_checkpoint_file(self.checkpoint_path, state)

    def _load_checkpoint(self) -> dict:
        return load_checkpoint_file(self.checkpoint_path, "a critic checkpoint")

    def _log(self, record: dict) -> None:
        append_log(self.out / LOG_FILE, record)

    # -- setup

    def _setup(self) -> int:
        """Build everything; return the step to start from."""
        ckpt = None
        if self.resume:
            ckpt = self._load_checkpoint()
            saved = TrainConfig(**ckpt["config"])
            # The run's recipe comes from the checkpoint; only its length and bookkeeping may change (the
            # length: --steps if given, else the checkpoint's, else what --minutes allows).
            keep = {k: getattr(self.config, k) for k in ("checkpoint_every", "val_every", "threads", "device", "minutes")}
            steps = self.given_steps if self.given_steps is not None else saved.steps
            self.config = dataclasses.replace(saved, steps=steps, **keep).resolved()
        elif self.checkpoint_path.exists():
            raise InputError("a checkpoint is already there; pass --resume to continue it, or choose another --out",
                             path=self.checkpoint_path)
        c = self.config
        torch.set_num_threads(c.threads)
        torch.manual_seed(c.seed)
        self.device = torch.device(c.device)
        if self.device.type == "cpu":
            keep_freed_memory()  # each step's activations are reused, not page-faulted in again (1.6-2x)

        self.dataset_ = read_dataset(self.data)
        self.data_hash_ = file_sha256(self.data)
        self.data_content_hash_ = self.dataset_.content_sha256()
        # A rebuilt copy of the same data passes (same content, another file hash: its meta records when it
        # was built); checkpoints of older versions hold only the file hash.
        if ckpt is not None and self.data_hash_ != ckpt["data_sha256"] and self.data_content_hash_ != ckpt.get("data_content_sha256"):
            raise InputError(f"expected the training data the checkpoint was made with (sha256 {ckpt['data_sha256']}), "
                             f"got sha256 {self.data_hash_}", path=self.data)
        self.val_dataset_ = read_dataset(self.val) if self.val else None
        if self.val_dataset_ is not None and c.kind == "protonet":
            # Fail now, not after training, if the validation file cannot make episodes.
            v = self.val_dataset_
            ExemplarEpisodes(v.labels, v.exemplars, min(c.val_ways, v.n_classes), 1)

        critic = build_critic({"kind": c.kind, "arch": c.arch, "image_size": c.image_size, "threshold": c.threshold})
        c.image_size = critic.image_size
        # The record of the starting weights is taken when the run starts and kept in its checkpoints, so a
        # resumed run still names them after `init_from` has been overwritten (checkpoints of older
        # versions lack it: then it is read again now).
        self.parent_ = (ckpt or {}).get("parent")
        if ckpt is None and c.init_from:
            self._load_initial_weights(critic, c.init_from)
        if c.init_from and self.parent_ is None:
            self.parent_ = lineage_record(c.init_from)
        self.critic_ = critic.to(self.device)
        if c.bf16:
            critic.to(memory_format=torch.channels_last)
        self.images_ = _prepared_images(critic, self.dataset_, self.device)
        if c.kind == "simclr":
            if c.batch_size > len(self.images_):
                raise InputError(f"expected batch_size <= the {len(self.images_)} training drawings, got {c.batch_size}", field="batch_size")
            self.augment_ = SimCLRAugment(critic.image_size, c.strength, c.threshold)
        else:
            self.episodes_ = ExemplarEpisodes(self.dataset_.labels, self.dataset_.exemplars, c.ways, c.queries, seed=c.seed)

        self.optimizer_ = critic_optimizer(critic, c)
        # ProtoNet's LR steps come from the step count: when --minutes leaves it to be estimated, the schedule
        # starts without steps and gets them with the estimate (`_set_lr_step`)
        self.lr_step_pending_ = c.kind == "protonet" and c.lr_step is None
        step_size = _NO_LR_STEP if self.lr_step_pending_ else c.lr_step
        self.scheduler_ = torch.optim.lr_scheduler.StepLR(self.optimizer_, step_size, c.lr_gamma) if step_size else None
        self.val_metrics_ = {}
        if ckpt is None:
            self.out.mkdir(parents=True, exist_ok=True)
            return 0
        critic.load_state_dict(ckpt["model"])
        self.optimizer_.load_state_dict(ckpt["optimizer"])
        if self.scheduler_ is not None:
            self.scheduler_.load_state_dict(ckpt["scheduler"])
            if self.scheduler_.step_size == _NO_LR_STEP and c.lr_step is not None:  # stopped before its estimate
                self._set_lr_step(int(ckpt["step"]))
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        self.val_metrics_ = ckpt.get("val_metrics") or {}
        return int(ckpt["step"])

    def _set_lr_step(self, step: int) -> None:
        """Give the schedule its step size `config.lr_step` after `step` steps, with the LR a schedule built with
        it would have reached (multiplied step by step, as StepLR does, so the numbers are the same)."""
        c = self.config
        lr = c.lr
        for _ in range(step // c.lr_step):
            lr = lr * c.lr_gamma
        for group in self.optimizer_.param_groups:
            group["lr"] = lr
        self.scheduler_.step_size = c.lr_step
        self.scheduler_._last_lr = [group["lr"] for group in self.optimizer_.param_groups]
        self.lr_step_pending_ = False

    def _load_initial_weights(self, critic, source: str) -> None:
        """Copy the weights of a trained critic of the same kind, architecture and resolution."""
        from drawgap.critics.registry import load_critic

        trained = load_critic(source, device="cpu")
        mine = (critic.kind, critic.image_size)
        theirs = (trained.kind, trained.image_size)
        if mine != theirs or trained.state_dict().keys() != critic.state_dict().keys():
            raise InputError(f"expected a {critic.kind} critic at {critic.image_size} px with this architecture, "
                             f"got {trained.kind} at {trained.image_size} px", field="init_from")
        critic.load_state_dict(trained.state_dict())

    # -- one step

    def _loss(self, step: int) -> torch.Tensor:
        source = self.augment_ if self.config.kind == "simclr" else self.episodes_
        return critic_loss(self.critic_, self.config, self.images_, step, source)

    def _validate(self, step: int) -> None:
        if self.val_dataset_ is None:
            return
        t0 = time.perf_counter()
        c = self.config
        self.val_metrics_ = acceptance_metrics(self.critic_, self.val_dataset_, ways=c.val_ways, episodes=c.val_episodes)
        self._log({"step": step, "val": self.val_metrics_, "val_seconds": round(time.perf_counter() - t0, 2)})

    # -- the loop

    def fit(self) -> "CriticTrainer":
        start = self._setup()
        c = self.config
        self._log({"event": "resume" if start else "start", "step": start, "config": dataclasses.asdict(c)})
        bar = progress_bar(self.progress, c.steps, start, f"{c.kind} {c.arch}")
        step, loss_avg, t0, t_last, s_last = start, None, time.perf_counter(), time.perf_counter(), start
        budget = TimeBudget(c.minutes)
        try:
            with StopRequest() as stop:
                self.critic_.train()
                while c.steps is None or step < c.steps:
                    loss = self._loss(step)
                    self.optimizer_.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer_.step()
                    if self.scheduler_ is not None:
                        self.scheduler_.step()
                    step += 1
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise FloatingPointError(f"loss became {value} at step {step}")
                    loss_avg = value if loss_avg is None else 0.95 * loss_avg + 0.05 * value
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss_avg:.4f}", val=headline(self.val_metrics_), refresh=False)
                    if self.on_step is not None:
                        self.on_step(step, value)
                    if c.steps is None:
                        self._estimate_steps(budget, step, bar)
                    if step % 10 == 0 or step == c.steps:
                        now = time.perf_counter()
                        self._log({"step": step, "loss": value, "loss_avg": loss_avg, "lr": self.optimizer_.param_groups[0]["lr"],
                                   "steps_per_s": (step - s_last) / max(now - t_last, 1e-9)})
                        t_last, s_last = now, step
                    if stop.signalled:
                        self.stopped_by = "signal"
                    elif step == c.steps:  # the recipe is done, even when the budget ends on the same step
                        self.stopped_by = "steps"
                    elif budget.expired():
                        self.stopped_by = "minutes"
                    if self.stopped_by is None and c.val_every and step % c.val_every == 0:
                        self._validate(step)
                        self.critic_.train()
                    if self.stopped_by is not None or step % c.checkpoint_every == 0:
                        self._save_checkpoint(step)
                    if self.stopped_by == "signal":
                        raise KeyboardInterrupt
                    if self.stopped_by is not None:
                        break
        except KeyboardInterrupt:
            if bar is not None:
                bar.close()
            if step > start and self.stopped_by != "signal":  # stopped within a step: its checkpoint now
                self._save_checkpoint(step)
            self.stopped_by = "signal"
            self._log({"event": "interrupted", "step": step})
            raise
        if bar is not None:
            bar.close()
        self.stopped_by = self.stopped_by or "steps"  # resumed at or beyond its last step
        self._validate(step)
        self.elapsed_, self.steps_done_ = time.perf_counter() - t0, step
        self._finish(step, start)
        return self

    def _estimate_steps(self, budget: TimeBudget, step: int, bar) -> None:
        """Turn the time budget into the run's step count once the speed is known."""
        estimate = budget.estimate_total_steps(step)
        if estimate is None:
            return
        c = self.config
        c.steps = max(estimate, step)
        self._log({"event": "steps estimated", "step": step, "steps": c.steps, "minutes": c.minutes})
        if self.lr_step_pending_:
            # a quarter of the run, but never before the step it is estimated at: a halving that fell due earlier
            # could not be applied to the steps already taken, and the recorded command (--lr-step) could not
            # reproduce the run (a very short --minutes on a slow machine)
            c.lr_step = max(step, c.steps // 4)
            self._set_lr_step(step)
        if bar is not None:
            bar.total = c.steps
            bar.refresh()

    def _finish(self, step: int, start: int) -> None:
        c = self.config
        self.critic_.eval()
        save_critic(
            self.critic_.cpu(),
            self.out,
            data_hash=self.data_hash_,
            seed=c.seed,
            training=dataclasses.asdict(c),
            command=dataclasses.replace(c, steps=step).command_line(self.data, self.out, self.val),
            argv=sys.argv,
            data={"path": str(self.data), "sha256": self.data_hash_, "content_sha256": self.data_content_hash_,
                  "n_drawings": len(self.dataset_.images),
                  "n_classes": self.dataset_.n_classes, "meta": {k: self.dataset_.meta.get(k) for k in ("name", "split", "source", "image_size")}},
            validation={"path": str(self.val), "sha256": file_sha256(self.val), "metrics": self.val_metrics_} if self.val else None,
            steps_done=step,
            stopped_by=self.stopped_by,
            resumed_at=start or None,
            parent=self.parent_,
        )
        self._log({"event": "done", "step": step, "stopped_by": self.stopped_by, "val": self.val_metrics_})


def train_critic(config: TrainConfig, data, out, val=None, resume: bool = False, on_step=None, progress: bool = True) -> Critic:
    """Train a critic from a dataset file into the directory `out` and return it (see `CriticTrainer`)."""
    return CriticTrainer(config, data, out, val, resume, on_step, progress).fit().critic_
