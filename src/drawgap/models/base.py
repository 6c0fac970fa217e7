"""The Generator interface of DESIGN.md, shared by every one-shot drawing generator: a generator family is
one subclass, in one file, that declares everything the rest of drawgap asks of it.

A generator is a `torch.nn.Module` that

- declares itself: a class with a `name` is registered under it when it is defined (`models.registry`);
- declares its `drawgap train` options: `Options`, a dataclass of `drawgap.options.option` fields (the CLI
  builds `drawgap train NAME --help` from it), and `config_from_options`, which turns them into its
  constructor arguments;
- trains: `configure_optimizers(options, state)` gives its optimizers and LR schedules, and
  `training_step(batch, run)` does one step with them (the default: `forward(batch)` is the loss, one
  optimizer); the loop in `models.training` owns all the rest (data order, checkpoints, resume, signals,
  budget, EMA where `uses_ema`, bf16, logging). `forward`, not a separate method, is what steps call so that
  DistributedDataParallel sees the call and synchronises gradients;
- draws: `sample(exemplars, n, *, seed=None, **options) -> Tensor[C, n, 1, H, W]` in [0, 1], ink high,
  row c made from exemplar c; the options `drawgap sample` may pass (sampler, steps, guidance) are
  declared in `sampling_defaults` and checked by `sampling_options`;
- persists: `save(dir)` writes `generator.json` (name, constructor arguments, provenance) beside
  `weights.safetensors`; `Generator.load(dir)` rebuilds the model from these two files alone.

Subclasses pass their constructor arguments to `Generator.__init__` as keywords: that dict is the config
saved with the weights, so it must hold JSON values only.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from drawgap.data.transforms import as_tensor_images
from drawgap.errors import InputError
from drawgap.io import write_json_atomic
from drawgap.options import model_fields
from drawgap.provenance import provenance
from drawgap.weights import load_weights, read_record, read_weights, write_weights

GENERATOR_FORMAT = "drawgap.generator/1"
CONFIG_FILE = "generator.json"
WEIGHTS_FILE = "weights.safetensors"


@dataclass
class NoOptions:
    """The options of a family that declares none of its own."""


@dataclass
class Schedule:
    """An LR scheduler and when the loop steps it: every `every` optimizer steps, with the logged value
    `monitor` (e.g. "loss", for ReduceLROnPlateau) when it needs one. Its state is checkpointed."""

    scheduler: Any
    every: int = 1
    monitor: str | None = None


class Generator(nn.Module, ABC):
    """Base class of the one-shot generators (see the module docstring for the contract)."""

    #: registry name, also written to `generator.json` and to samples files' meta
    name: ClassVar[str] = ""
    #: how reports and figures name the family (the papers' spelling); default: the name in capitals
    display_name: ClassVar[str] = ""
    #: batch keys that hold drawings of one class; `--augment-class` transforms them together
    class_keys: ClassVar[tuple[str, ...]] = ()
    #: the family's `drawgap train` options (a dataclass of `drawgap.options.option` fields)
    Options: ClassVar[type] = NoOptions
    #: the loop keeps an exponential moving average of the weights and saves it as the run's generator
    uses_ema: ClassVar[bool] = False
    #: some parameters get no gradient in a step (a GAN's generator in a critic step): DDP must not wait for them
    find_unused_parameters: ClassVar[bool] = False
    #: the options `drawgap sample` may pass to `sample`, with their defaults there
    sampling_defaults: ClassVar[dict] = {}
    #: state-dict prefixes only training needs (a GAN's critic): `export` leaves them out of a shipped copy
    training_only_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):  # a family declares itself by naming itself
            from drawgap.models.registry import declare_family

            declare_family(cls)

    def __init__(self, **config):
        super().__init__()
        json.dumps(config)  # the config must round-trip through generator.json
        self.config = dict(config)

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --------------------------------------------------------------------------------------- contract

    @abstractmethod
    def sample(self, exemplars, n: int, *, seed: int | None = None, **options) -> torch.Tensor:
        """[C, n, 1, H, W] drawings in [0, 1], n per exemplar."""

    @abstractmethod
    def forward(self, batch: dict) -> torch.Tensor:
        """The training loss of one batch of `training_set(...)`."""

    @abstractmethod
    def training_set(self, dataset, seed: int = 0) -> torch.utils.data.Dataset:
        """The torch dataset of training items built from a drawgap `Dataset` (items are dicts of tensors)."""

    # ------------------------------------------------------------------------------------ training

    @classmethod
    def config_from_options(cls, options, image_size: int) -> dict:
        """Constructor arguments from the family's `Options` (its `model=True` fields) and the data's size."""
        return {"image_size": image_size, **{k: getattr(options, k) for k in sorted(model_fields(cls.Options))}}

    @abstractmethod
    def configure_optimizers(self, options, state) -> tuple[list[torch.optim.Optimizer], list[Schedule]]:
        """(optimizers, schedules) for a training with the family's `options`; `state` is the loop's live
        `TrainState` (step, total_steps) for schedules that depend on where the training stands."""

    def training_step(self, batch: dict, run) -> dict:
        """One optimizer step on `batch`; returns the values to log ("loss" at least). `run` (a
        `models.training.StepRun`) holds the prepared model to call, the optimizers, `backward` and
        `clip_grad_norm_`. The default: `forward(batch)` is the loss of the single optimizer."""
        optimizer = run.optimizers[0]
        loss = run.model(batch)
        run.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"loss": loss}

    # ------------------------------------------------------------------------------------ sampling options

    def sampling_options(self, **given) -> dict:
        """The options to pass to `sample`: those given (None: not given) over `sampling_defaults`; an
        InputError names an option this family does not have."""
        for key, value in given.items():
            if value is not None and key not in self.sampling_defaults:
                takes = ", ".join(f"--{k}" for k in self.sampling_defaults) or "no sampling options"
                raise InputError(f"{self.name} has no {key} option (it takes {takes})", field=f"--{key}")
        return {k: given[k] if given.get(k) is not None else d for k, d in self.sampling_defaults.items()}

    def sampling_record(self, options: dict) -> dict:
        """What a samples file records of the options `sampling_options` returned (sampler and steps run)."""
        return {"sampler": options.get("sampler"), "steps": options.get("steps")}

    # ------------------------------------------------------------------------------------ exemplars

    def check_exemplars(self, exemplars, path=None) -> torch.Tensor:
        """uint8 [C,H,W] / float [C,H,W] / float [C,1,H,W] -> float [C,1,H,W] on the model's device,
        or InputError if the size is not the one the model was trained at."""
        try:
            x = as_tensor_images(exemplars)
        except ValueError as exc:
            raise InputError(str(exc), path=path, field="exemplars") from None
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise InputError(
                f"expected {self.image_size}x{self.image_size} exemplars (the size {self.name} was trained at), "
                f"got {x.shape[-2]}x{x.shape[-1]}",
                path=path,
                field="exemplars",
            )
        return x.to(self.device)

    # ------------------------------------------------------------------------------------ save / load

    def save(self, directory: str | os.PathLike, extra: dict | None = None, seed: int | None = None) -> Path:
        """Write `weights.safetensors` then `generator.json` (each atomically, the weights' sha256 recorded).

        seed: the seed of the run that made the weights, recorded in the provenance."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sha256 = write_weights(self, directory / WEIGHTS_FILE, metadata={"format": GENERATOR_FORMAT, "generator": self.name})
        record = {
            "format": GENERATOR_FORMAT,
            "generator": self.name,
            "config": self.config,
            "n_parameters": sum(p.numel() for p in self.parameters()),
            "weights_sha256": sha256,
            **(extra or {}),
            "provenance": provenance(self.config, seed),
        }
        write_json_atomic(directory / CONFIG_FILE, record)
        return directory

    def export(self, directory: str | os.PathLike, record: dict, float16: bool = True) -> Path:
        """A copy to sample from, for shipping: the weights without `training_only_prefixes` (a GAN's critic),
        as float16 with `float16` (they load into float32 modules; half the size), and `record` (the run's
        generator.json) marked so, with the new weights' sha256. Such a copy samples exactly as the run's weights
        rounded to float16 do; it cannot be trained on (`drawgap train --resume` reads checkpoints, never this)."""
        from drawgap.weights import file_sha256, save_safetensors

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu") for k, v in self.state_dict().items()
                 if not k.startswith(self.training_only_prefixes)}
        if float16:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        save_safetensors({k: v.contiguous() for k, v in state.items()}, directory / WEIGHTS_FILE,
                         metadata={"format": GENERATOR_FORMAT, "generator": self.name})
        out = {key: value for key, value in record.items() if key not in ("weights_sha256", "weights_storage", "weights_content")}
        out["weights_sha256"] = file_sha256(directory / WEIGHTS_FILE)
        out["weights_storage"] = "float16" if float16 else "float32"
        if self.training_only_prefixes:
            out["weights_content"] = "sampling"  # the training-only tensors are left out
        write_json_atomic(directory / CONFIG_FILE, out)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> "Generator":
        """Rebuild a generator from a directory written by `save`; InputError on missing or mismatched files
        (weights whose sha256 differs from the recorded one included; records older than it are not checked)."""
        directory = Path(directory)
        record = read_generator_record(directory)
        if cls.name and record["generator"] != cls.name:
            raise InputError(f"expected a {cls.name} generator, found {record['generator']!r}", path=directory / CONFIG_FILE, field="generator")
        try:
            model = cls(**record["config"])
        except (TypeError, ValueError) as exc:
            raise InputError(f"config does not build a {cls.name or 'generator'} ({exc})", path=directory / CONFIG_FILE, field="config") from None
        model.load_weights_of(directory, record, map_location)
        return model.to(map_location).eval()

    def load_weights_of(self, directory: str | os.PathLike, record: dict, map_location: str | torch.device = "cpu") -> None:
        """Load the weights of the run directory whose generator.json is `record` into this generator, checked
        against the recorded sha256; a copy exported for sampling may lack the `training_only_prefixes` tensors,
        which then keep their values (float16 copies load into float32 modules)."""
        weights = Path(directory) / WEIGHTS_FILE
        state = read_weights(weights, map_location, record.get("weights_sha256"), CONFIG_FILE,
                             missing="no such file (the run directory holds no trained weights)")
        optional = self.training_only_prefixes if record.get("weights_content") == "sampling" else ()
        load_weights(self, state, weights, optional_prefixes=optional)


def read_generator_record(directory: str | os.PathLike) -> dict:
    """The parsed `generator.json` of a run directory, checked for its required fields."""
    path = Path(directory) / CONFIG_FILE
    record = read_record(path, GENERATOR_FORMAT, missing="no such file (not a run directory written by `drawgap train`)")
    for key, kind in (("generator", str), ("config", dict)):
        if not isinstance(record.get(key), kind):
            raise InputError(f"expected a {kind.__name__}", path=path, field=key)
    return record


def item_seeds(seed: int, rows: int, n: int) -> np.ndarray:
    """[rows, n] independent 63-bit seeds, one per drawing (row c, draw k): a drawing depends only on
    (seed, c, k), never on the batch size, on n, or on which other exemplars were sampled with it."""
    out = np.empty((rows, n), np.int64)
    for c in range(rows):
        for k in range(n):
            word = np.random.SeedSequence(seed, spawn_key=(c, k)).generate_state(1, np.uint64)[0]
            out[c, k] = int(word >> np.uint64(1))
    return out
