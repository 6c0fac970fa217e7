"""The metrics file (`metrics.json`, DESIGN.md): writer and checked reader, as `importance/maps_file.py`
is for maps. `drawgap evaluate` writes it; `compare`, `report` and `evaluate --human` read it."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from drawgap.errors import InputError
from drawgap.io import write_json_atomic
from drawgap.weights import read_record

METRICS_FORMAT = "drawgap.metrics/1"

REQUIRED_KEYS = ("diversity", "recognizability", "originality", "generalization_curve", "per_class", "ci95",
                 "n_classes", "samples_per_class", "critics", "protocol")


def write_metrics(metrics: dict, path: str | os.PathLike) -> Path:
    """Write a metrics dict as JSON, atomically (a reader never sees half a file)."""
    write_json_atomic(path, metrics)
    return Path(path)


def read_metrics(path: str | os.PathLike) -> dict:
    """A metrics.json file, checked for the keys of DESIGN.md; InputError naming the file otherwise."""
    metrics = read_record(path, METRICS_FORMAT)
    for key in REQUIRED_KEYS:
        if key not in metrics:
            raise InputError("missing key", path=path, field=key)
    bad = _first_non_finite(metrics)
    if bad is not None:  # json reads NaN, Infinity and 1e400: a distance computed from them means nothing
        raise InputError("expected a finite number, found NaN or infinity", path=path, field=bad)
    return metrics


def _first_non_finite(value, where: str = "") -> str | None:
    """The dotted path (`ci95.diversity[1]`) of the first NaN, infinite or float-overflowing number, or None."""
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    elif isinstance(value, float):
        return None if math.isfinite(value) else where
    elif isinstance(value, int) and not isinstance(value, bool):
        return None if abs(value) <= sys.float_info.max else where
    else:
        return None
    for key, item in items:
        found = _first_non_finite(item, key)
        if found is not None:
            return found
    return None
