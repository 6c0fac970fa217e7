"""The metrics file (`metrics.json`, DESIGN.md): writer and checked reader, as `importance/maps_file.py`
is for maps. `drawgap evaluate` writes it; `compare`, `report` and `evaluate --human` read it."""

from __future__ import annotations

import os
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
    return metrics
