"""The Generator interface of DESIGN.md, shared by every one-shot drawing generator.

A generator is a `torch.nn.Module` that

- draws: `sample(exemplars, n, *, seed=None, **options) -> Tensor[C, n, 1, H, W]` in [0, 1], ink high,
  row c made from exemplar c;
- trains: `forward(batch) -> scalar loss` on the batches of `training_set(dataset)` (forward, not a
  separate method, so that DistributedDataParallel sees the call and synchronises gradients);
- persists: `save(dir)` writes `generator.json` (name, constructor arguments, provenance) beside
  `weights.safetensors`; `Generator.load(dir)` rebuilds the model from these two files alone.

Subclasses pass their constructor arguments to `Generator.__init__` as keywords: that dict is the config
saved with the weights, so it must hold JSON values only.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from drawgap.data.transforms import as_tensor_images
from drawgap.errors import InputError
from drawgap.io import atomic_path, write_json_atomic
from drawgap.provenance import provenance

GENERATOR_FORMAT = "drawgap.generator/1"
CONFIG_FILE = "generator.json"
WEIGHTS_FILE = "weights.safetensors"


class Generator(nn.Module, ABC):
    """Base class of the one-shot generators (see the module docstring for the contract)."""

    #: registry name, also written to `generator.json` and to samples files' meta
    name: ClassVar[str] = ""
    #: batch keys that hold drawings of one class; `--augment-class` transforms them together
    class_keys: ClassVar[tuple[str, ...]] = ()

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
        """Write `generator.json` and `weights.safetensors` into `directory` (each atomically).

        seed: the seed of the run that made the weights, recorded in the provenance."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": GENERATOR_FORMAT, "generator": self.name})
        record = {
            "format": GENERATOR_FORMAT,
            "generator": self.name,
            "config": self.config,
            "n_parameters": sum(p.numel() for p in self.parameters()),
            **(extra or {}),
            "provenance": provenance(self.config, seed),
        }
        write_json_atomic(directory / CONFIG_FILE, record)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> "Generator":
        """Rebuild a generator from a directory written by `save`; InputError on missing or mismatched files."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        record = read_generator_record(directory)
        if cls.name and record["generator"] != cls.name:
            raise InputError(f"expected a {cls.name} generator, found {record['generator']!r}", path=directory / CONFIG_FILE, field="generator")
        try:
            model = cls(**record["config"])
        except (TypeError, ValueError) as exc:
            raise InputError(f"config does not build a {cls.name or 'generator'} ({exc})", path=directory / CONFIG_FILE, field="config") from None
        weights = directory / WEIGHTS_FILE
        if not weights.exists():
            raise InputError("no such file (the run directory holds no trained weights)", path=weights)
        try:
            state = load_file(str(weights), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"expected a safetensors file, could not read it ({exc})", path=weights) from None
        _check_state(model, state, weights)
        model.load_state_dict(state)
        return model.to(map_location).eval()


def read_generator_record(directory: str | os.PathLike) -> dict:
    """The parsed `generator.json` of a run directory, checked for its required fields."""
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise InputError("no such file (not a run directory written by `drawgap train`)", path=path)
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"expected JSON ({exc})", path=path) from None
    if not isinstance(record, dict) or record.get("format") != GENERATOR_FORMAT:
        raise InputError(f"expected format {GENERATOR_FORMAT!r}", path=path, field="format")
    for key, kind in (("generator", str), ("config", dict)):
        if not isinstance(record.get(key), kind):
            raise InputError(f"expected a {kind.__name__}", path=path, field=key)
    return record


def _check_state(model: nn.Module, state: dict, path: Path) -> None:
    """Name the first missing, unexpected or mis-shaped tensor (load_state_dict's message is many lines)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise InputError(
            f"weights do not match the config ({len(missing)} missing, {len(unexpected)} unexpected tensors; {what})",
            path=path,
        )
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise InputError(f"weights do not match the config: {k} has shape {list(state[k].shape)}, expected {list(v.shape)}", path=path)


def item_seeds(seed: int, rows: int, n: int) -> np.ndarray:
    """[rows, n] independent 63-bit seeds, one per drawing (row c, draw k): a drawing depends only on
    (seed, c, k), never on the batch size, on n, or on which other exemplars were sampled with it."""
    out = np.empty((rows, n), np.int64)
    for c in range(rows):
        for k in range(n):
            word = np.random.SeedSequence(seed, spawn_key=(c, k)).generate_state(1, np.uint64)[0]
            out[c, k] = int(word >> np.uint64(1))
    return out
