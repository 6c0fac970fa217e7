"""Generators by name, and `load_generator(run_dir)`, which rebuilds any of them from its run directory.

Trained generators ship like the critics: each a run directory (generator.json + weights.safetensors, what
`drawgap train` writes, with TRAINING.md holding the command that made it) in `drawgap/models/weights/`,
named `<dataset>-<generator>`; `load_generator("strokes-cfgdm")` and `drawgap sample strokes-cfgdm ...`
take the name wherever a run directory is accepted.

A family declares itself: defining a `Generator` subclass with a `name` registers it (`declare_family`),
so a family written outside drawgap (a test, a plug-in) trains, loads and samples like the built-in ones.
The built-in families are found by importing the modules of `drawgap.models` the first time a name is
asked for (not before, so that `drawgap --help` stays fast): a new family is one file in `models/`.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import shutil
from pathlib import Path

import torch

from drawgap.errors import InputError
from drawgap.io import atomic_path
from drawgap.models.base import CONFIG_FILE, WEIGHTS_FILE, Generator, read_generator_record
from drawgap.shipped import shipped_names
from drawgap.weights import file_sha256, install_directory, resolve_directory

# families defined so far, by name (built-in ones once imported)
_DECLARED: dict[str, type[Generator]] = {}

WEIGHTS_DIR = Path(__file__).parent / "weights"

# The trained generators drawgap ships, by name (a view of the one table, `drawgap.shipped`).
SHIPPED: dict[str, str] = shipped_names("generator")


def shipped_dir(name: str) -> Path:
    return WEIGHTS_DIR / name


def is_installed(directory: str | os.PathLike) -> bool:
    directory = Path(directory)
    return (directory / CONFIG_FILE).is_file() and (directory / WEIGHTS_FILE).is_file()


def resolve_run_dir(name_or_dir: str | os.PathLike) -> Path:
    """The run directory of a shipped generator's name, or the directory given."""
    return resolve_directory(name_or_dir, "generator", WEIGHTS_DIR, (CONFIG_FILE, WEIGHTS_FILE),
                             "train it with `drawgap train` and copy the run directory there", paths_may_be_missing=True)


def declare_family(cls: type[Generator]) -> None:
    """Register a generator family under its `name` (called when a `Generator` subclass is defined)."""
    _DECLARED[cls.name] = cls


def _import_builtin_families() -> None:
    """Import every module of `drawgap.models` once: defining a family's class declares it."""
    import drawgap.models as package

    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)


def family_names() -> list[str]:
    """Every generator family: the built-in ones and those declared elsewhere, by name."""
    _import_builtin_families()
    return sorted(_DECLARED)


def generator_class(name: str) -> type[Generator]:
    if name not in _DECLARED:
        _import_builtin_families()
    if name not in _DECLARED:
        raise InputError(f"unknown generator {name!r}; expected one of {', '.join(sorted(_DECLARED))}", field="generator")
    return _DECLARED[name]


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
    """The trained generator of a run directory (its generator.json names the class), or a shipped one by name."""
    run_dir = resolve_run_dir(run_dir)
    record = read_generator_record(run_dir)
    return generator_class(record["generator"]).load(run_dir, map_location=map_location)


# ------------------------------------------------------------------------------------------- shipping


def install_generator(run_dir: str | os.PathLike, name: str, metrics: list[str | os.PathLike] = (),
                      notes: str = "") -> Path:
    """Copy a trained run (generator.json, weights.safetensors, train.json) into the package's
    `weights/<name>/` under a shipped name, with a TRAINING.md holding the command, the data, the training
    time and, from `metrics` files written by `drawgap evaluate`, how well it draws."""
    if name not in SHIPPED:
        raise InputError(f"expected a shipped name ({', '.join(SHIPPED)}), got {name!r}", field="name")
    run_dir = Path(run_dir)
    generator = load_generator(run_dir)  # checks the weights against the record
    family = name.split("-", 1)[-1]  # <data>-<family>: the family may hold a hyphen (vae-stn, dagan-un)
    if generator.name != family:
        raise InputError(f"expected a {family} run for {name!r}, got {generator.name}",
                         path=run_dir / CONFIG_FILE, field="generator")
    weights = run_dir / WEIGHTS_FILE
    megabytes = weights.stat().st_size / 1e6
    if megabytes >= 25:
        raise InputError(f"expected weights under 25 MB to keep in the repository, got {megabytes:.1f} MB", path=weights)
    record = read_generator_record(run_dir)
    train = json.loads((run_dir / "train.json").read_text()) if (run_dir / "train.json").is_file() else {}
    evaluated = [(Path(p), json.loads(Path(p).read_text())) for p in metrics]
    dest = install_directory(run_dir, shipped_dir(name), (WEIGHTS_FILE, CONFIG_FILE, "train.json"),
                             generator_notes(name, record, train, file_sha256(weights), evaluated, notes))
    assert sum(p.numel() for p in load_generator(name).parameters()) == sum(p.numel() for p in generator.parameters())
    return dest


def export_for_shipping(run_dir: str | os.PathLike, dest: str | os.PathLike, float16: bool = True) -> Path:
    """A run directory's copy to ship (`Generator.export`: float16, without training-only tensors such as a
    GAN's critic), with its train.json; evaluate this copy, then `install_generator` it."""
    run_dir, dest = Path(run_dir), Path(dest)
    generator_class(read_generator_record(run_dir)["generator"]).load(run_dir).export(dest, read_generator_record(run_dir), float16)
    if (run_dir / "train.json").is_file():
        with atomic_path(dest / "train.json") as tmp:
            shutil.copyfile(run_dir / "train.json", tmp)
    return dest


def _critics_used(metrics: dict) -> str:
    """The critics a metrics file was measured with, by name and weights hash: the numbers change with them."""
    used = [f"{c.get('name')} `{(c.get('weights_hash') or '')[:8]}`" for c in (metrics.get("critics") or {}).values()]
    return ", ".join(used) or "-"


def _uses_ema(record: dict) -> bool:
    try:
        return bool(generator_class(record["generator"]).uses_ema)
    except InputError:
        return True  # a family this installation does not have: say what the diffusion models say


def _resumed_lines(train: dict) -> list[str]:
    """The invocations that continued the run (train.json's `resumed`), in order, after its first command."""
    resumed = train.get("resumed") or []
    if not resumed:
        return []
    lines = ["then resumed:", "", "```"]
    lines += [f"{r.get('command') or '(unknown)'}   # at step {r.get('at_step')}, to {r.get('total_steps')}" for r in resumed]
    return lines + ["```", ""]


def generator_notes(name: str, record: dict, train: dict, weights_sha256: str,
                    evaluated: list[tuple[Path, dict]] = (), notes: str = "") -> str:
    """TRAINING.md of a shipped generator: what it is, how it was trained, how well it draws."""
    t = record.get("training") or {}
    prov = record.get("provenance") or {}
    data = train.get("dataset") or {}
    options = train.get("options") or {}
    lines = [
        f"# {name}", "", SHIPPED[name] + ".",
        f"{record['generator']} generator, {record.get('n_parameters', 0):,} parameters, config "
        f"`{json.dumps(record['config'], sort_keys=True)}`.", "",
        "## How it was trained", "", "```",
        (train.get("provenance") or {}).get("command") or "(unknown)", "```", "",
        *_resumed_lines(train),
        "(rerun the same command with `--resume` to continue an interrupted run: the recipe is kept)", "",
        f"- optimizer steps: {t.get('step')} of {t.get('total_steps')} (batch {options.get('batch_size')}, "
        f"lr {options.get('lr')}" + (f" {options['lr_schedule']}" if options.get("lr_schedule") else "")
        + f", bf16 {options.get('bf16')}" + (", EMA weights" if _uses_ema(record) else "") + "), "
        f"epochs {t.get('epoch')}, final loss " + ("-" if t.get("loss") is None else f"{t['loss']:.4f}"),
        f"- training time: {t.get('seconds', 0) / 60:.1f} min on {t.get('processes', 1)} process(es)",
        f"- seed: {options.get('seed')}",
        *([f"- started from the weights of `{train['init_from'].get('source')}` (sha256 `{train['init_from'].get('weights_sha256')}`, "
           f"{train['init_from'].get('weights_storage')}; `--init-from`: a new optimizer, the step count restarts at 0)"]
          if train.get("init_from") else []),
        f"- training data: `{data.get('path')}` ({data.get('name')}, {data.get('split')} split, {data.get('image_size')} px)"
        + (f", sha256 `{data['sha256']}`" if data.get("sha256") else ""),
        f"- weights sha256: `{weights_sha256}`",
        f"- created {prov.get('created')} with " + ", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items()),
    ]
    if notes:
        lines += ["", notes.strip()]
    if evaluated:
        lines += ["", "## How well it draws", "", "Measured with `drawgap evaluate` (95 % bootstrap intervals over classes):", "",
                  "| samples | guidance | sampler | recognizability % | diversity | critics (weights sha256) |",
                  "|---|---|---|---|---|---|"]
        for path, m in evaluated:
            params = (m.get("samples_meta") or {}).get("params") or {}
            ci = m.get("ci95") or {}
            rec, div = ci.get("recognizability") or [None, None], ci.get("diversity") or [None, None]
            fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            sampler = "-" if params.get("sampler") is None else f"{params['sampler']} x{params.get('steps')}"
            lines.append(f"| `{path.name}` | {fmt(params.get('guidance'), 'g')} | {sampler} | "
                         f"{fmt(m.get('recognizability'), '.1f')} [{fmt(rec[0], '.1f')}, {fmt(rec[1], '.1f')}] | "
                         f"{fmt(m.get('diversity'), '.3f')} [{fmt(div[0], '.3f')}, {fmt(div[1], '.3f')}] | "
                         f"{_critics_used(m)} |")
        cmd = ((evaluated[0][1].get("provenance") or {}).get("command"))
        if cmd:
            lines += ["", "e.g. `" + cmd + "`"]
    return "\n".join(lines) + "\n"
