"""Sample a trained generator into samples files (DESIGN.md), one per guidance value: `drawgap sample`.

Exemplars come from a dataset file (each class's exemplar) or a samples file (its exemplars row).
Each output file records the generator, the sampling parameters, the run's config and training state, the
exemplars' source, the seed and the versions, so `drawgap evaluate` and a reader know what made it.
Drawings are stored as uint8 (ink 255): the critics binarise them, and float32 would make QuickDraw-size
files 4x larger for no measurable difference.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from drawgap.data.formats import Samples, read_drawings, write_samples
from drawgap.data.transforms import to_uint8
from drawgap.errors import InputError
from drawgap.models.base import read_generator_record
from drawgap.models.naming import samples_file_name
from drawgap.models.registry import load_generator, resolve_run_dir
from drawgap.provenance import provenance


def parse_guidance(text: str | None) -> list[float] | None:
    """'0,0.5,1,2' -> [0.0, 0.5, 1.0, 2.0]; None stays None (the generator's default)."""
    if text is None:
        return None
    values = []
    for part in text.split(","):
        try:
            g = float(part)
        except ValueError:
            raise InputError(f"expected comma-separated numbers, got {part.strip()!r} in {text!r}", field="--guidance") from None
        if not math.isfinite(g) or g < 0:
            raise InputError(f"expected finite numbers >= 0, got {part.strip()!r}", field="--guidance")
        values.append(g)
    return values


def read_exemplars(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict]:
    """(exemplars [C, H, W], class names [C], source info) from a dataset file or a samples file."""
    drawings = read_drawings(path)
    if isinstance(drawings, Samples):
        s = drawings
        return s.exemplars, s.classes, {"path": str(path), "kind": "samples", **(s.meta.get("dataset") or {})}
    ds = drawings
    info = {k: ds.meta.get(k) for k in ("name", "split", "source", "image_size")}
    return ds.exemplar_images(), ds.classes, {"path": str(path), "kind": "dataset", **info}


def sample_to_files(
    run_dir: str | os.PathLike,
    exemplars: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    per_exemplar: int,
    guidance: list[float] | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    classes: int = 0,
    device: str | None = None,
    progress: bool = False,
) -> list[Path]:
    """Write one samples file per guidance value into out_dir; return their paths.

    sampler, steps, guidance: None is "not given", the generator family's default (`sampling_defaults`);
    the family checks them and refuses those it does not have.
    classes: only the first N classes (0: all). device: torch device (default: cuda if available).
    """
    if per_exemplar < 1:
        raise InputError(f"expected at least 1 drawing per exemplar, got {per_exemplar}", field="--per-exemplar")
    if classes < 0:
        raise InputError(f"expected a class count >= 0, got {classes}", field="--classes")
    run_dir = resolve_run_dir(run_dir)
    record = read_generator_record(run_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    generator = load_generator(run_dir, map_location=device)
    images, names, source = read_exemplars(exemplars)
    if classes:
        images, names = images[:classes], names[:classes]
    try:
        generator.check_exemplars(images[:1])
    except InputError as exc:
        raise InputError(exc.detail, path=exemplars, field="exemplars") from None
    warn_other_dataset(run_dir, source)

    written = []
    for g in guidance if guidance is not None else [None]:
        options = generator.sampling_options(sampler=sampler, steps=steps, guidance=g)
        drawings = generator.sample(images, per_exemplar, seed=seed, batch_size=batch_size, progress=progress, **options)
        used = options.get("guidance")  # the family's default when not given (cfgdm 1): recorded, never null
        params = {"guidance": used, **generator.sampling_record(options), "per_exemplar": per_exemplar, "seed": seed}
        meta = {
            "generator": record["generator"],
            "params": params,
            "dataset": source,
            "run": {"dir": str(run_dir), "config": record["config"], "training": record.get("training")},
            "provenance": provenance(params, seed),
        }
        C, n = drawings.shape[:2]
        samples = Samples(
            samples=to_uint8(drawings.reshape(C * n, *drawings.shape[2:])).reshape(C, n, *drawings.shape[-2:]),
            exemplars=to_uint8(torch.as_tensor(images)) if images.dtype != np.uint8 else images,
            classes=np.asarray(names),
            meta=meta,
        )
        guided = getattr(generator, "cond_drop_prob", 0) > 0  # a guided family: its file names its guidance
        name = samples_file_name(record["generator"], used if guided else g)
        written.append(write_samples(samples, Path(out_dir) / name))
    return written


def trained_on(run_dir: Path) -> dict:
    """The dataset a run was trained on, as its train.json records it ({} when it records none)."""
    import json

    path = Path(run_dir) / "train.json"
    try:
        return dict(json.loads(path.read_text()).get("dataset") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def warn_other_dataset(run_dir: Path, source: dict) -> None:
    """Warn when the exemplars come from another dataset than the one the generator was trained on (a
    generator trained on Omniglot draws strokes exemplars of the same size without complaint, but badly)."""
    import warnings

    record = trained_on(run_dir)
    trained, given = record.get("name"), source.get("name")
    if trained and given and trained != given:
        warnings.warn(f"{run_dir} was trained on {trained!r} ({record.get('path')}) but the exemplars in "
                      f"{source.get('path')} come from {given!r}: its drawings may say little about either", stacklevel=2)
