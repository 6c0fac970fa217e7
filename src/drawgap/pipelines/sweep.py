"""`drawgap sweep FAMILY --param NAME=v1,v2,...`: the NeurIPS study's point clouds. One variant of a generator
family per value of one of its options, each evaluated against the human reference of a test split, and the
variants' cloud on the diversity-recognizability plane.

Which options a family has, and whether each is a training or a sampling option, comes from the family's own
declaration: its `Options` dataclass (the `drawgap train FAMILY` options: context, beta, time-steps, z-size...)
holds the training options, its `sampling_defaults` (sampler, steps, guidance) the sampling ones.

- A **training** option trains one run per value into OUT/runs/<name>=<value>/ (`drawgap train`'s run
  directories, same loop), then samples each from the test exemplars.
- A **sampling** option samples one trained generator (`--generator`, a run directory or a shipped name)
  once per value.
- `training-step` (every family) is a learning curve: it samples the snapshots of one run (`--generator RUN`,
  trained with `drawgap train --snapshot-every N`), one variant per step; `training-step=all` takes every
  snapshot and the run's last step.

Every variant's samples file is evaluated like `drawgap evaluate ... --human OUT/metrics/human.json`; the
human reference is the first `classes` test classes, `per_exemplar` drawings each (OUT/human.npz).

    OUT/sweep.json                     format, param, values, each variant's files, provenance, the command
    OUT/sweep.png, sweep.pdf           the plane: humans and the variants, labelled and joined in value order
    OUT/human.npz, metrics/human.json  the human reference and its metrics
    OUT/runs/<name>=<value>/           training sweeps: one run directory per value
    OUT/samples/<name>=<value>/*.npz   one samples file per value
    OUT/metrics/<name>=<value>.json    its metrics

Resumable: sweep.json is rewritten after every stage of every variant; rerunning the same command skips what
is done (a finished training, a samples or metrics file already written) and resumes an interrupted training
from its newest checkpoint (`drawgap train --resume`, exactly). A rerun with other settings into the same
OUT is refused: its finished variants would not be comparable with the new ones. Other values with the same
settings are not: a sweep extended with more values keeps its finished variants and adds the new ones.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from drawgap.errors import InputError
from drawgap.io import write_json_atomic
from drawgap.options import cli_fields, flag_of
from drawgap.provenance import provenance

SWEEP_FORMAT = "drawgap.sweep/1"
SWEEP_FILE = "sweep.json"


class SweepInterrupted(Exception):
    """A variant's training stopped on Ctrl-C / SIGTERM (its checkpoint written): rerun to continue."""


# ------------------------------------------------------------------------------------- sweepable options


@dataclass(frozen=True)
class SweptOption:
    """One option of a family that a sweep can vary."""

    name: str  # the dataclass field / sampling keyword, e.g. "time_steps"
    flag: str  # its command-line spelling without dashes, e.g. "time-steps" (the variants' names)
    kind: str  # "training" or "sampling"
    parse: Callable[[str], Any]
    expects: str  # what a value must be, for the error message


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "on", "yes"):
        return True
    if low in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_number_or_text(text: str):
    """A sampling option without a typed default (steps None, sampler "dpm++"): a number where it is one."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _parser(kind) -> tuple[Callable[[str], Any], str]:
    """(parse, what it expects) for a declared type; parse raises ValueError."""
    if kind is bool:
        return _parse_bool, "true or false"
    if kind in (int, float):
        def parse(text: str):
            value = kind(text)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"expected a finite number, got {text!r}")
            return value
        return parse, "integers" if kind is int else "finite numbers"
    return str, "text"


def _parse_training_step(text: str):
    """A snapshot's step, or "all" (every snapshot of the run, and its last step)."""
    if text.lower() == "all":
        return "all"
    value = int(text)
    if value < 0:
        raise ValueError(f"expected a step >= 0, got {text!r}")
    return value


# Every family's learning curve: its run's snapshots (`drawgap train --snapshot-every`), one variant per step.
TRAINING_STEP = SweptOption("training_step", "training-step", "snapshot", _parse_training_step,
                            "training steps of the run's snapshots, or all")


def sweepable_options(family) -> dict[str, SweptOption]:
    """The options of a family a sweep can vary, by field name: its declared `Options` on the command line
    (training), its `sampling_defaults` (sampling), and the training step of a run's snapshots (a learning
    curve)."""
    hints = typing.get_type_hints(family.Options)
    found: dict[str, SweptOption] = {}
    for f in cli_fields(family.Options):
        args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        kind = args[0] if args else hints[f.name]
        found[f.name] = SweptOption(f.name, flag_of(f)[2:], "training", *_parser(kind))
    for name, default in family.sampling_defaults.items():
        if name in found:
            continue
        parse = _parser(type(default)) if isinstance(default, (bool, int, float)) else (_parse_number_or_text, "values")
        found[name] = SweptOption(name, name.replace("_", "-"), "sampling", *parse)
    found.setdefault(TRAINING_STEP.name, TRAINING_STEP)
    return found


def _label(value) -> str:
    """How a value names its variant: floats with format "g" (0.5, 1, 2), others as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return format(value, "g") if isinstance(value, float) else str(value)


def parse_param(family, text: str) -> tuple[SweptOption, list]:
    """'context=2,5,10' -> (the family's context option, [2, 5, 10]); InputError (field --param) naming the
    option the family lacks with the ones it has, an unparsable value, an empty list or a repeated value."""
    name, sep, values_text = str(text).partition("=")
    if not sep or not name.strip():
        raise InputError(f"expected NAME=v1,v2,... (e.g. context=2,5,10), got {text!r}", field="--param")
    key = name.strip().lstrip("-").replace("-", "_")
    options = sweepable_options(family)
    if key not in options:
        by_kind = {kind: [o.flag for o in options.values() if o.kind == kind] for kind in ("training", "sampling", "snapshot")}
        has = "; ".join(f"{kind}: {', '.join(flags)}" for kind, flags in by_kind.items() if flags) or "none"
        raise InputError(f"{family.name} has no option {name.strip()!r} to sweep (it has {has})", field="--param")
    option = options[key]
    parts = [p.strip() for p in values_text.split(",")]
    if not values_text.strip() or not all(parts):
        raise InputError(f"expected a comma-separated list of values for {option.flag}, got {values_text!r}", field="--param")
    values = []
    for part in parts:
        try:
            values.append(option.parse(part))
        except ValueError:
            raise InputError(f"expected {option.expects} for {option.flag}, got {part!r} in {values_text!r}",
                             field="--param") from None
    if option is TRAINING_STEP and "all" in values and len(values) > 1:
        raise InputError(f"expected all alone or a list of steps for {option.flag}, got {values_text!r}", field="--param")
    labels = [_label(v) for v in values]
    if len(set(labels)) != len(labels):
        raise InputError(f"expected distinct values, got {values_text!r}", field="--param")
    if any("/" in label or label.startswith(".") for label in labels):
        raise InputError(f"expected values that can name a folder (no '/', not starting with '.'), got {values_text!r}",
                         field="--param")
    return option, values


def value_order(values: list) -> list[int]:
    """Indices of the values in increasing order (numbers), or as given (text): the order the plane joins them."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sorted(range(len(values)), key=lambda i: values[i])
    return list(range(len(values)))


# ---------------------------------------------------------------------------------------------- the sweep


@dataclass
class SweepConfig:
    family: str
    param: str  # NAME=v1,v2,...
    test: Path
    critics: str
    out: Path
    data: Path | None = None  # training sweeps
    generator: str | None = None  # sampling sweeps: a run directory or a shipped generator's name
    family_options: dict = field(default_factory=dict)  # given options of the family, for every variant
    train_options: dict = field(default_factory=dict)  # given options of the training loop (steps, minutes, ...)
    seed: int = 0  # of the training and of the drawings
    classes: int = 0  # first N test classes (0: all)
    per_exemplar: int = 10
    sampler: str | None = None
    sampler_steps: int | None = None
    queries: int = 500
    bootstrap: int = 1000

    def command(self) -> str:
        """The `drawgap sweep` command line that runs (or continues) this sweep, from the CLI's own options."""
        from drawgap.options import cli_command

        return cli_command(["sweep", self.family], param=self.param, data=self.data, test=self.test, critics=self.critics,
                           out=self.out, generator=self.generator, classes=self.classes, per_exemplar=self.per_exemplar,
                           sampler=self.sampler, sampler_steps=self.sampler_steps, queries=self.queries,
                           bootstrap=self.bootstrap, **self.family_options, **self.train_options, seed=self.seed)

    def settings(self) -> dict:
        """What makes two runs of the sweep comparable (everything but the values and the output folder)."""
        keep = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("out", "param")}
        keep["param"] = str(self.param).partition("=")[0].strip().lstrip("-").replace("-", "_")
        # files by absolute path: the same command rerun from another folder is the same sweep
        return {k: (str(Path(v).resolve()) if isinstance(v, Path) else v) for k, v in keep.items()}


@dataclass
class SweepResult:
    path: Path  # sweep.json
    figures: list[Path]
    variants: list[dict]


def _check_config(cfg: SweepConfig):
    """The family, the swept option and its values, each checked before any work; InputError otherwise."""
    from drawgap.models.registry import generator_class
    from drawgap.models.training import TrainOptions

    family = generator_class(cfg.family)  # an unknown name lists the known ones
    option, values = parse_param(family, cfg.param)
    # two drawings per class at least: diversity is a spread (as the demo's --per-exemplar)
    for name, low in (("classes", 0), ("per_exemplar", 2), ("queries", 1), ("bootstrap", 1)):
        if getattr(cfg, name) < low:
            raise InputError(f"expected an integer >= {low}, got {getattr(cfg, name)}", field=f"--{name.replace('_', '-')}")
    if option.name in cfg.family_options:
        raise InputError(f"{option.flag} is swept by --param; do not also give --{option.flag}", field=f"--{option.flag}")
    for key, given, flag in (("sampler", cfg.sampler, "--sampler"), ("steps", cfg.sampler_steps, "--sampler-steps")):
        if given is None:
            continue
        if key not in family.sampling_defaults:
            takes = ", ".join(f"--{k}" for k in family.sampling_defaults) or "no sampling options"
            raise InputError(f"{family.name} has no {key} option (it takes {takes})", field=flag)
        if option.kind == "sampling" and option.name == key:
            raise InputError(f"{key} is swept by --param; do not also give {flag}", field=flag)
    if option.kind == "training":
        if cfg.data is None:
            raise InputError(f"{option.flag} is a training option of {family.name}: give --data TRAIN.npz to train a variant per value",
                             field="--data")
        if cfg.generator is not None:
            raise InputError(f"{option.flag} is a training option: each value trains its own generator; --generator samples "
                             "one trained generator for a sampling option", field="--generator")
        TrainOptions(**cfg.train_options).check()
        for v in values:
            family.Options(**{**cfg.family_options, option.name: v})  # the family's own checks, by field
    else:
        if cfg.generator is None:
            what = ("a learning curve: give --generator RUN (a run directory trained with --snapshot-every) to sample "
                    "each snapshot" if option.kind == "snapshot" else
                    f"a sampling option of {family.name}: give --generator RUN (a run directory or a shipped name) to "
                    "sample once per value")
            raise InputError(f"{option.flag} is {what}", field="--generator")
        extra = sorted({*cfg.family_options, *cfg.train_options} - {"seed"})
        if cfg.data is not None or extra:
            what = ", ".join(["--data"] * (cfg.data is not None) + [f"--{k.replace('_', '-')}" for k in extra])
            raise InputError(f"{option.flag} is a sampling option: nothing is trained, so {what} would do nothing", field="--param")
    return family, option, values


def snapshot_sources(run_dir: Path, values: list) -> tuple[list[int], dict[int, Path]]:
    """(the steps, each step's generator directory) of a learning-curve sweep: the run's snapshots and its
    last step (the run directory itself); `all` is every one of them. InputError naming the steps there are."""
    from drawgap.models.base import read_generator_record
    from drawgap.models.training import snapshots

    sources = snapshots(run_dir)
    last = (read_generator_record(run_dir).get("training") or {}).get("step")
    if isinstance(last, int):
        sources.setdefault(last, run_dir)
    if not sources:
        raise InputError("has no snapshots and no training step: train it with --snapshot-every N", path=run_dir,
                         field="--generator")
    steps = sorted(sources) if values == ["all"] else values
    missing = [v for v in steps if v not in sources]
    if missing:
        raise InputError(f"has no snapshot of step {', '.join(map(str, missing))} (it has {', '.join(map(str, sorted(sources)))})",
                         path=run_dir, field="--param")
    return steps, sources


def _human_reference(cfg: SweepConfig, test) -> tuple[Path, int]:
    """OUT/human.npz: the first `classes` test classes, `per_exemplar` drawings each (as the demo's)."""
    from drawgap.data.formats import write_samples

    n_classes = test.n_classes if cfg.classes == 0 else min(cfg.classes, test.n_classes)
    fewest = int(test.labels.size and min(np.bincount(test.labels)))
    if cfg.per_exemplar > fewest:
        raise InputError(f"expected at most {fewest} drawings per exemplar (the human drawings per test class), got "
                         f"{cfg.per_exemplar}", path=cfg.test, field="--per-exemplar")
    path = cfg.out / "human.npz"
    if not path.is_file():
        human = test.to_samples(per_class=cfg.per_exemplar, classes=n_classes)
        human.meta["provenance"] = provenance({"from": str(cfg.test), "classes": n_classes, "per_class": cfg.per_exemplar}, cfg.seed)
        write_samples(human, path)
    return path, n_classes


def _read_previous(path: Path, cfg: SweepConfig) -> dict:
    """The variants a previous run of the same sweep recorded, by name ({} for a new OUT); InputError when OUT
    holds a sweep with other settings."""
    import json

    if not path.is_file():
        return {}
    try:
        previous = json.loads(path.read_text())
        settings, variants = previous["settings"], previous["variants"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"unreadable sweep record ({exc}); choose a new --out", path=path) from None
    if previous.get("format") != SWEEP_FORMAT:
        raise InputError(f"expected format {SWEEP_FORMAT}, got {previous.get('format')!r}", path=path, field="format")
    if settings != cfg.settings():
        changed = sorted(k for k in {*settings, *cfg.settings()} if settings.get(k) != cfg.settings().get(k))
        raise InputError(f"holds a sweep with other settings ({', '.join(changed)} differ): rerun the same command to "
                         "continue it, or choose a new --out", path=path)
    return {v["name"]: v for v in variants if isinstance(v, dict) and "name" in v}


def run_sweep(cfg: SweepConfig, echo: Callable[[str], None] = print, progress: bool = False) -> SweepResult:
    """Run (or continue) the sweep into cfg.out; see the module docstring."""
    from drawgap.data.formats import read_dataset
    from drawgap.metrics.evaluate import evaluate, resolve_critic_pairs
    from drawgap.metrics.metrics_file import write_metrics
    from drawgap.models.base import read_generator_record
    from drawgap.models.registry import load_generator, resolve_run_dir
    from drawgap.models.sampling import sample_to_files
    from drawgap.models.training import latest_checkpoint, run_training

    family, option, values = _check_config(cfg)
    pairs = resolve_critic_pairs(cfg.critics)  # loaded now: a bad --critics stops the sweep before any training
    critic_args = (dict(simclr=pairs[0][1], protonet=pairs[0][2]) if len(pairs) == 1
                   else dict(critics={name: (s, p) for name, s, p in pairs}))
    if option.kind in ("sampling", "snapshot"):
        run_dir = resolve_run_dir(cfg.generator)
        trained = read_generator_record(run_dir)["generator"]
        if trained != family.name:
            raise InputError(f"expected a {family.name} generator for `drawgap sweep {family.name}`, got a {trained} run",
                             path=run_dir, field="--generator")
        model = load_generator(run_dir)
        if option.kind == "snapshot":
            values, snapshot_dirs = snapshot_sources(run_dir, values)
            model.sampling_options(sampler=cfg.sampler, steps=cfg.sampler_steps)
        else:
            for v in values:  # the family's checks of every value before any drawing
                model.sampling_options(**{"sampler": cfg.sampler, "steps": cfg.sampler_steps, option.name: v})
    test = read_dataset(cfg.test)
    if cfg.data is not None:
        read_dataset(cfg.data)  # a bad training file fails now, not after the first variant

    cfg.out.mkdir(parents=True, exist_ok=True)
    record_path = cfg.out / SWEEP_FILE
    previous = _read_previous(record_path, cfg)
    human, n_classes = _human_reference(cfg, test)
    metrics_dir = cfg.out / "metrics"
    human_metrics = metrics_dir / "human.json"
    evaluation = dict(queries=cfg.queries, bootstrap=cfg.bootstrap, **critic_args)
    if not human_metrics.is_file():
        echo(f"evaluating the human reference ({n_classes} classes x {cfg.per_exemplar} drawings)")
        write_metrics(evaluate(human, name="human", **evaluation), human_metrics)

    names = [f"{option.flag}={_label(v)}" for v in values]
    variants: list[dict] = []

    def save(complete: bool) -> None:
        recorded = {**previous, **{v["name"]: v for v in variants}}
        ordered = [recorded[n] for n in names if n in recorded] + [v for n, v in recorded.items() if n not in names]
        write_json_atomic(record_path, {
            "format": SWEEP_FORMAT, "family": family.name, "param": option.name, "flag": option.flag, "kind": option.kind,
            "values": values, "complete": complete, "settings": cfg.settings(),
            "human": {"samples": _rel(human, cfg.out), "metrics": _rel(human_metrics, cfg.out)},
            "variants": ordered, "provenance": provenance(cfg.settings(), cfg.seed),
            "command": cfg.command(),
        })

    for i, (value, name) in enumerate(zip(values, names), start=1):
        variant = dict(previous.get(name) or {"name": name, "value": value})
        variant["value"] = value
        step = f"[{i}/{len(values)}] {name}"
        if option.kind == "training":
            run = cfg.out / "runs" / name
            variant["run"] = _rel(run, cfg.out)
            finished = (variant.get("training") or {}).get("stopped_by") in ("steps", "minutes") and (run / "generator.json").is_file()
            if finished:
                echo(f"{step}: trained ({variant['training']['step']} steps), skipped")
            else:
                resume = latest_checkpoint(run) is not None
                echo(f"{step}: training" + (" (resumed from its newest checkpoint)" if resume else ""))
                result = run_training(family.name, cfg.data, run, resume=resume, progress=progress,
                                      **{**cfg.train_options, "seed": cfg.seed}, **cfg.family_options, **{option.name: value})
                s = result.state
                variant["training"] = {"step": s.step, "total_steps": s.total_steps, "seconds": round(s.seconds, 1),
                                       "loss": s.loss, "stopped_by": result.stopped_by}
                variant.pop("samples", None), variant.pop("metrics", None)  # drawn from the weights before, if any
                variants.append(variant)
                save(False)
                if result.stopped_by == "signal":
                    raise SweepInterrupted(f"interrupted while training {name} (step {s.step}, checkpoint saved); "
                                           "rerun the same command to continue")
                echo(f"{step}: trained {s.step} steps in {s.seconds / 60:.1f} min, loss "
                     + ("-" if s.loss is None else f"{s.loss:.4f}"))
            source, sampling = run, {"sampler": cfg.sampler, "steps": cfg.sampler_steps}
        elif option.kind == "snapshot":
            source, sampling = snapshot_dirs[value], {"sampler": cfg.sampler, "steps": cfg.sampler_steps}
        else:
            source, sampling = run_dir, {"sampler": cfg.sampler, "steps": cfg.sampler_steps, option.name: value}
        samples = cfg.out / variant["samples"] if variant.get("samples") else None
        if samples is None or not samples.is_file():
            echo(f"{step}: sampling {n_classes} classes x {cfg.per_exemplar} drawings")
            guidance = sampling.pop("guidance", None)
            (samples,) = sample_to_files(source, cfg.test, cfg.out / "samples" / name, per_exemplar=cfg.per_exemplar,
                                         guidance=None if guidance is None else [guidance], seed=cfg.seed,
                                         classes=cfg.classes, progress=progress, **sampling)
            variant["samples"] = _rel(samples, cfg.out)
            variant.pop("metrics", None)
        metrics = cfg.out / variant["metrics"] if variant.get("metrics") else None
        if metrics is None or not metrics.is_file():
            echo(f"{step}: evaluating")
            metrics = write_metrics(evaluate(samples, human=human_metrics, name=f"{family.name} {name}", **evaluation),
                                    metrics_dir / f"{name}.json")
            variant["metrics"] = _rel(metrics, cfg.out)
        else:
            echo(f"{step}: evaluated, skipped")
        variants = [v for v in variants if v["name"] != name] + [variant]
        save(False)

    figures = write_sweep_figure(cfg.out, family.name, option.flag, [v for v in variants], human_metrics)
    save(True)
    return SweepResult(record_path, figures, variants)


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def write_sweep_figure(out: Path, family: str, flag: str, variants: list[dict], human_metrics: Path) -> list[Path]:
    """OUT/sweep.png and .pdf: humans and the variants on the plane, each labelled, joined in value order."""
    from drawgap.metrics.comparison import compare
    from drawgap.metrics.metrics_file import read_metrics
    from drawgap.report.plots import plot_sweep, save_png_and_pdf

    order = value_order([v["value"] for v in variants])
    ordered = [variants[i] for i in order]
    systems = compare([read_metrics(human_metrics), *(read_metrics(out / v["metrics"]) for v in ordered)],
                      names=["human", *(v["name"] for v in ordered)], human="human")["systems"]
    fig = plot_sweep(systems, [v["name"] for v in ordered], [_label(v["value"]) for v in ordered],
                     title=f"{family}: {flag} sweep")
    return save_png_and_pdf(fig, out / "sweep")
