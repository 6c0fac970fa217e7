"""Generators by name, and `load_generator(run_dir)`, which rebuilds any of them from its run directory.

Classes are listed as import paths and imported on first use, so that `drawgap --help` stays fast and a
generator's heavy dependencies load only when it is used. A new generator adds one line to `GENERATORS`.
"""

from __future__ import annotations

import importlib
import os

import torch

from drawgap.errors import InputError
from drawgap.models.base import Generator, read_generator_record

GENERATORS: dict[str, str] = {
    "ddpm": "drawgap.models.diffusion.model:DDPM",
    "cfgdm": "drawgap.models.diffusion.model:CFGDM",
    "fsdm": "drawgap.models.diffusion.fsdm:FSDM",
}


def generator_class(name: str) -> type[Generator]:
    if name not in GENERATORS:
        raise InputError(f"unknown generator {name!r}; expected one of {', '.join(GENERATORS)}", field="generator")
    module, attr = GENERATORS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def create_generator(name: str, seed: int | None = 0, **config) -> Generator:
    """A new, untrained generator; `config` are its constructor arguments (e.g. image_size, preset).

    seed: the weights' initialisation is drawn from torch's generator seeded with it (None: unseeded).
    """
    cls = generator_class(name)
    try:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            return cls(**config)
    except (TypeError, ValueError) as exc:
        raise InputError(f"cannot build {name} with {config} ({exc})", field="config") from None


def load_generator(run_dir: str | os.PathLike, map_location="cpu") -> Generator:
    """The trained generator of a run directory (its generator.json names the class)."""
    record = read_generator_record(run_dir)
    return generator_class(record["generator"]).load(run_dir, map_location=map_location)
