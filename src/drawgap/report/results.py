"""A results directory, read back: every metrics file in it (any depth), the samples files they were
computed from, importance maps files, the ink reports of those maps (`drawgap importance ink`), and the
demo's record of its stages.

The report is built from this alone, so every number it shows comes from the files of that run.
Systems are named for display from what the files record: `human`; a diffusion generator in capitals
with its guidance (`CFGDM g=1`); otherwise the metrics' own `system` name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drawgap.errors import InputError
from drawgap.metrics.comparison import compare
from drawgap.metrics.metrics_file import METRICS_FORMAT, read_metrics

DEMO_RECORD = "demo.json"
DIFFUSION_MAP_NAMES = {"guided": "guided score", "guided_diff": "guided score (cond - uncond, accumulated)",
                       "implicit": "implicit classifier", "loss_grad": "loss gradient"}
INK_SUFFIX = "_ink"  # the demo names an ink report after its maps file: cfgdm.guided.npz -> cfgdm.guided_ink.json


@dataclass
class InkSource:
    """One ink report (`drawgap.importance_ink/1`): its display name, file and content."""

    name: str
    path: Path
    report: dict


@dataclass
class Results:
    """What a results directory holds. `systems` are `drawgap.metrics.compare` rows (distance to human
    z-scored over every system found), in display order; `metrics[name]` and `metrics_paths[name]` by the
    same names."""

    root: Path
    metrics: dict[str, dict]
    metrics_paths: dict[str, Path]
    comparison: dict
    samples_paths: dict[str, Path] = field(default_factory=dict)
    importance_paths: list[Path] = field(default_factory=list)
    demo: dict | None = None
    ink: list[InkSource] = field(default_factory=list)

    @property
    def systems(self) -> list[dict]:
        return self.comparison["systems"]

    @property
    def human(self) -> str | None:
        return self.comparison["human"]

    def generator(self, name: str) -> str | None:
        return (self.metrics[name].get("samples_meta") or {}).get("generator")

    def guidance(self, name: str) -> float | None:
        params = (self.metrics[name].get("samples_meta") or {}).get("params") or {}
        g = params.get("guidance")
        return None if g is None else float(g)


def system_label(metrics: dict) -> str:
    """Display name: `human`, `DDPM`, `CFGDM g=0.5`, or the metrics' `system` (a name given at evaluation)."""
    from drawgap.models.naming import display_name, guidance_suffix, system_name

    meta = metrics.get("samples_meta") or {}
    generator, system = meta.get("generator"), metrics.get("system")
    if system == "human" or generator == "human":
        return "human"
    if system not in (None, generator, system_name(meta)):  # a name given at evaluation
        return str(system)
    family = display_name(str(generator)) if generator else None
    if family:
        return family + guidance_suffix(generator, meta.get("params") or {})
    return str(system or generator or "system")


def maps_source_label(meta: dict) -> str:
    """Display name of a source of importance maps from its maps meta: `CFGDM g=1 guided score`,
    `strokes-protonet saliency`, `human`; the recorded method where the meta names no model."""
    method = str(meta.get("method") or "unknown")
    generator = (meta.get("generator") or {}).get("name")
    critic = (meta.get("critic") or {}).get("name") or (meta.get("critic") or {}).get("kind")
    if method.startswith("human"):
        return "human"
    if method.startswith("diffusion-") and generator:
        kind = method.removeprefix("diffusion-")
        g = (meta.get("options") or {}).get("guidance")
        from drawgap.models.naming import display_name

        who = (display_name(str(generator)) or str(generator)) + ("" if g is None else f" g={float(g):g}")
        return f"{who} {DIFFUSION_MAP_NAMES.get(kind, kind)}"
    if method.startswith("critic-") and critic:
        return f"{critic} {method.removeprefix('critic-').replace('_', ' ')}"
    return method


def _has_format(path: Path, fmt: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
        return fmt.encode() in head and json.loads(path.read_text()).get("format") == fmt
    except (OSError, ValueError, AttributeError):
        return False


def _is_metrics_file(path: Path) -> bool:
    return _has_format(path, METRICS_FORMAT)


def _json_files(root: Path, fmt: str) -> list[Path]:
    """JSON files of format `fmt` under root, any depth, hidden and temporary files skipped."""
    return [p for p in sorted(root.rglob("*.json"))
            if not any(part.startswith(".") for part in p.relative_to(root).parts) and _has_format(p, fmt)]


def find_metrics_files(root: Path) -> list[Path]:
    """Metrics files (format drawgap.metrics/1) under root, any depth, hidden and temporary files skipped."""
    return _json_files(root, METRICS_FORMAT)


def load_ink_reports(root: Path) -> list[InkSource]:
    """The ink reports under root, named for display (`maps_source_label`; the file's stem tells apart two
    with the same name), in file order."""
    from drawgap.importance.compare import INK_FORMAT

    out: list[InkSource] = []
    for path in _json_files(root, INK_FORMAT):
        report = json.loads(path.read_text())
        name = maps_source_label(report.get("maps_meta") or {"method": report.get("method")})
        if any(s.name == name for s in out):
            name = f"{name} ({path.stem.removesuffix(INK_SUFFIX)})"
        out.append(InkSource(name, path, report))
    return out


def _sort_key(item: tuple[str, dict]) -> tuple:
    name, m = item
    meta = m.get("samples_meta") or {}
    g = (meta.get("params") or {}).get("guidance")
    is_human = name == "human"
    return (not is_human, str(meta.get("generator") or name), -1.0 if g is None else float(g), name)


def resolve_samples_path(metrics: dict, metrics_path: Path, root: Path) -> Path | None:
    """The samples file a metrics file was computed from: its recorded path as is, relative to the results
    directory or to the metrics file, or a file of that name anywhere under the results directory."""
    recorded = ((metrics.get("provenance") or {}).get("config") or {}).get("samples")
    if not recorded:
        return None
    recorded = Path(recorded)
    for candidate in (recorded, root / recorded, metrics_path.parent / recorded):
        if candidate.is_file():
            return candidate
    matches = sorted(root.rglob(recorded.name))
    return matches[0] if matches else None


def _importance_files(root: Path) -> list[Path]:
    """Importance maps files under root (an .npz holding `maps`; datasets and samples files are skipped
    by their keys, without reading their arrays)."""
    found = []
    for path in sorted(root.rglob("*.npz")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                if "maps" in z.files and "image_ids" in z.files:
                    found.append(path)
        except (OSError, ValueError):
            continue
    return found


def load_results(root: str | os.PathLike) -> Results:
    """Read a results directory; InputError when it holds no metrics file."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("expected a results directory", path=root)
    paths = find_metrics_files(root)
    if not paths:
        raise InputError(f"expected metrics files ({METRICS_FORMAT}, written by `drawgap evaluate`) in it, found none", path=root)
    loaded: dict[str, tuple[dict, Path]] = {}
    for path in paths:
        m = read_metrics(path)
        label = base = system_label(m)
        k = 2
        while label in loaded:  # two files with the same name: tell them apart by file
            label, k = f"{base} ({path.stem})" if k == 2 else f"{base} ({path.stem} {k})", k + 1
        loaded[label] = (m, path)
    ordered = sorted(((n, m) for n, (m, _) in loaded.items()), key=_sort_key)
    names = [n for n, _ in ordered]
    metrics = {n: m for n, m in ordered}
    humans = [n for n in names if n == "human"]
    comparison = compare([metrics[n] for n in names], names=names, human=humans[0] if humans else None)
    metrics_paths = {n: loaded[n][1] for n in names}
    samples = {n: p for n in names if (p := resolve_samples_path(metrics[n], metrics_paths[n], root)) is not None}
    demo_path = root / DEMO_RECORD
    demo = json.loads(demo_path.read_text()) if demo_path.is_file() else None
    return Results(root, metrics, metrics_paths, comparison, samples, _importance_files(root), demo, load_ink_reports(root))
