"""`drawgap demo`: the whole study, end to end, into one folder (`make demo` runs it).

Stages, each with a progress display, each writing its files under OUT so that any stage can be re-run
alone with the CLI command recorded for it in OUT/demo.json (and shown in the report):

1. data        OUT/data/train.npz, test.npz (built-in strokes, or Omniglot's weak split from --source; for
               quickdraw only test.npz: the QuickDraw-FS test split of the shipped QuickDraw models, rebuilt from
               the categories of --source that hold its classes, see `quickdraw_test_split`),
               OUT/data/human.npz: the human drawings of the evaluated test classes, as a samples file;
2. generators  OUT/generators/<family>/: every generator drawgap ships for the dataset (`drawgap.shipped`,
               named `<data>-<family>`: ddpm, cfgdm and the baselines where shipped), copied; ddpm and cfgdm
               are trained here within the time budget when not shipped, or with `--train` (`--generators`
               chooses other families);
3. sample      OUT/samples/ddpm.npz, cfgdm_g0.npz, cfgdm_g0.5.npz, cfgdm_g1.npz, cfgdm_g2.npz, <baseline>.npz: the
               test exemplars drawn with the fast sampler (DPM-Solver++) where the family has one, a guided
               family (cfgdm) at each guidance value, the others once;
4. evaluate    OUT/metrics/human.json and one metrics file per samples file, against the human reference,
               with the dataset's shipped critics;
5. importance  OUT/importance/<source>.npz (importance maps, each file with its reliability) and
               <source>_ink.json (how each map places its mass on the ink, and how localized it is): the
               CFGDM's guided-score (cond - uncond, accumulated), implicit-classifier and loss-gradient maps of the first `importance_classes` test exemplars, and the Saliency maps of
               both shipped critics for one test drawing of each of those classes (`--importance-classes 0`
               skips it);
6. report      OUT/report.html and OUT/figures/*.png, *.pdf.

Shipped generators are looked up by name, `<data>-<generator>` (e.g. `strokes-cfgdm`), as run directories
(generator.json + weights.safetensors, what `drawgap train` writes) under `drawgap/models/weights/`, the
layout of the shipped critics.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from drawgap.errors import InputError
from drawgap.io import write_json_atomic
from drawgap.options import cli_command
from drawgap.provenance import provenance

DEMO_FORMAT = "drawgap.demo/1"
DATASETS = ("strokes", "omniglot", "quickdraw")
DATA_VERBS = {"strokes": "strokes", "omniglot": "omniglot", "quickdraw": "quickdraw-fs"}  # `drawgap data VERB` of each
TRAINED_GENERATORS = ("ddpm", "cfgdm")  # trained here with --train, or when drawgap ships none for the dataset
GUIDANCE = (0.0, 0.5, 1.0, 2.0)
SHIPPED_GENERATORS_DIR = Path(__file__).resolve().parents[1] / "models" / "weights"
RUN_FILES = ("generator.json", "weights.safetensors", "train.json", "TRAINING.md")

# The importance stage's settings, chosen so that the default (10 exemplars) stays well under a minute on 2
# CPU cores (measured: 39 to 50 s for the whole stage with the 0.8 M-parameter strokes CFGDM, on one thread
# of a 2-core machine loaded about 3x by other jobs; the diffusion maps are most of it, the critics and ink
# a few seconds):
# - 4 trajectories per exemplar (the paper: 25): the mean mass on the ink is already stable (measured on the
#   strokes CFGDM, 10 exemplars: 4 vs 12 trajectories changed it by <= 0.002 for every kind), but the
#   localization measures are not: maps averaged over fewer trajectories are noisier, with more regions (6.1
#   vs 3.7 for the implicit-classifier maps, 20.9 vs 11.0 for the loss gradient) and their mass a little more
#   spread (half of it on 13.7 vs 14.0 %, 22.2 vs 23.6 % of the pixels); the report says so, and `drawgap
#   importance maps diffusion --trajectories 25` makes the paper's maps from the same files;
# - the demo's own sampler (DPM-Solver++, `sampler_steps` steps), seed and guidance 1 (the paper's CFGDM):
#   trajectory k of exemplar c is then drawing k of class c in OUT/samples/cfgdm_g1.npz (`drawgap.models.
#   base.item_seeds`), so the maps explain drawings the report shows;
# - critics: captum Saliency (|d logit / d pixel|), the cheapest method and the one that can put importance
#   on the background: Integrated Gradients and Occlusion from a blank canvas give background pixels zero
#   attribution by construction, which would make "mass on the ink" 100 % whatever the critic does;
# - the CLI's defaults for everything else (t-range all steps, 3 loss-gradient steps, ink at 48 px dilated
#   by 1 px, regions above half the maximum), so each recorded command gives the same files.
IMPORTANCE_TRAJECTORIES = 4
IMPORTANCE_GUIDANCE = 1.0
IMPORTANCE_GRAD_STEPS = 3
IMPORTANCE_BATCH = 256
CRITIC_METHOD = "saliency"
INK_OPTIONS = {"resolution": 48, "threshold": 0.5, "dilate": 1}


@dataclass
class DemoConfig:
    out: Path
    data: str = "strokes"
    source: Path | None = None  # Omniglot archives (a folder or the zips; None downloads them), or Quick, Draw! ndjson files
    train: bool = False  # train the generators here instead of loading the shipped ones
    budget: float = 10.0  # minutes of training, all generators together (with --train)
    train_steps: int | None = None  # optimizer steps per generator (instead of the budget's estimate)
    classes: int = 20  # test exemplars drawn from and evaluated (0: every test class)
    per_exemplar: int = 10  # drawings per exemplar, and human drawings per class
    # DPM-Solver++ (SDE) steps. 20, not 10: with the shipped strokes CFGDM at g = 1 (demo's 20 classes x 10),
    # 10 steps leave grey speckle away from the strokes on 2.42 % of those pixels, 20 steps on 0.49 % (humans:
    # 0); the deterministic form at 10 steps on 28 %. `benchmarks/demo_sampler_settings.py`, README.
    sampler_steps: int = 20
    guidance: tuple[float, ...] = GUIDANCE
    queries: int = 500
    bootstrap: int = 1000
    importance_classes: int = 10  # test exemplars whose importance maps are made (0: no importance stage)
    generators: tuple[str, ...] | None = None  # families to draw with (None: see `demo_generators`)
    seed: int = 0  # of the training and the drawings (the data are the built-in dataset; evaluation uses its own seed)

    def check(self) -> "DemoConfig":
        if self.data not in DATASETS:
            raise InputError(f"expected one of {', '.join(DATASETS)}, got {self.data!r}", field="--data")
        if self.source is not None and self.data == "strokes":
            raise InputError("--source gives the Omniglot archives or the Quick, Draw! files; add --data omniglot or "
                             "--data quickdraw", field="--source")
        if self.data == "quickdraw" and self.source is None:
            raise InputError("--data quickdraw needs --source: the folder of <category>.ndjson files the shipped "
                             "QuickDraw models' QuickDraw-FS was built from", field="--source")
        if self.data == "quickdraw" and self.train:
            raise InputError("the quickdraw demo evaluates the shipped QuickDraw generators and builds only the test "
                             "split; to train, build QuickDraw-FS with `drawgap data quickdraw-fs` and use `drawgap "
                             "train`", field="--train")
        if not self.budget > 0:
            raise InputError(f"expected a positive number of minutes, got {self.budget}", field="--budget")
        for name, low in (("classes", 0), ("per_exemplar", 2), ("sampler_steps", 1), ("queries", 1), ("bootstrap", 1),
                          ("importance_classes", 0)):
            if getattr(self, name) < low:
                raise InputError(f"expected an integer >= {low}, got {getattr(self, name)}", field=f"--{name.replace('_', '-')}")
        if self.train_steps is not None and self.train_steps < 1:
            raise InputError(f"expected a positive step count, got {self.train_steps}", field="--train-steps")
        if self.generators is not None:
            from drawgap.models.registry import generator_class

            if not self.generators:
                raise InputError("expected at least one generator family", field="--generators")
            for name in self.generators:
                try:
                    generator_class(name)
                except InputError as exc:
                    raise InputError(exc.detail, field="--generators") from None
        return self


@dataclass
class DemoRecord:
    """What the demo did: written to OUT/demo.json after every stage."""

    config: dict
    commands: list[str] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    generators: dict = field(default_factory=dict)

    def save(self, out: Path) -> None:
        write_json_atomic(out / "demo.json", {"format": DEMO_FORMAT, **asdict(self),
                                              "provenance": provenance(self.config, self.config.get("seed"))})


# ------------------------------------------------------------------------------------------- helpers


def demo_generators(cfg: DemoConfig) -> list[str]:
    """The generator families the demo draws with: `--generators` as given; with `--train`, ddpm and cfgdm;
    otherwise ddpm, cfgdm and every other generator the shipped table (`drawgap.shipped`) lists for the
    dataset as `<data>-<family>`, so that a newly shipped one joins the samples, tables and plane by itself."""
    from drawgap.shipped import SHIPPED

    if cfg.generators is not None:
        return list(dict.fromkeys(cfg.generators))
    if cfg.train:
        return list(TRAINED_GENERATORS)
    prefix = f"{cfg.data}-"
    listed = [name[len(prefix):] for name, s in SHIPPED.items() if s.kind == "generator" and name.startswith(prefix)]
    return list(dict.fromkeys([*TRAINED_GENERATORS, *listed]))


def shipped_generator(data: str, name: str) -> Path | None:
    """The shipped run directory of generator `name` for dataset `data`, or None if drawgap ships none."""
    directory = SHIPPED_GENERATORS_DIR / f"{data}-{name}"
    ok = (directory / "generator.json").is_file() and (directory / "weights.safetensors").is_file()
    return directory if ok else None


def _progress(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def _q(path) -> str:
    """A path as it would be typed in a shell command."""
    import shlex

    return shlex.quote(str(path))


class _Stage:
    """Times a stage and records it: `with _Stage(record, out, console, "sample") as stage: ...`."""

    def __init__(self, record: DemoRecord, out: Path, console: Console, name: str, number: int, total: int):
        self.record, self.out, self.console, self.name = record, out, console, name
        self.number, self.total = number, total
        self.outputs: list[str] = []

    def __enter__(self) -> "_Stage":
        self.console.rule(f"[bold]{self.number}/{self.total} {self.name}")
        self.started = time.perf_counter()
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            seconds = time.perf_counter() - self.started
            self.record.stages.append({"stage": self.name, "seconds": round(seconds, 1),
                                       "outputs": [str(Path(p).relative_to(self.out)) for p in self.outputs]})
            self.record.save(self.out)
            self.console.print(f"[green]done[/] {self.name} in {seconds:.0f} s")


# -------------------------------------------------------------------------------------------- stages


def build_data(cfg: DemoConfig, record: DemoRecord, console: Console) -> dict[str, Path]:
    """Stage 1: dataset files and the human reference (first `classes` test classes, `per_exemplar` drawings)."""
    from drawgap.data.formats import write_dataset, write_samples

    data_dir = cfg.out / "data"
    with _progress(console) as bar:
        task = bar.add_task(f"building {cfg.data}", total=None)
        if cfg.data == "strokes":
            from drawgap.data.strokes import StrokesConfig, build_strokes

            # the default dataset: the one the shipped critics and generators were trained on
            splits = build_strokes(StrokesConfig())
            record.commands.append(cli_command(["data", "strokes"], out=data_dir))
        elif cfg.data == "quickdraw":
            splits = {"test": quickdraw_test_split(cfg, record, data_dir)}
        else:
            from drawgap.data.omniglot import build_omniglot

            splits = build_omniglot(None if cfg.source is None else [cfg.source], split="weak", size=48, progress=False)
            record.commands.append(cli_command(["data", "omniglot"], out=data_dir, split="weak", size=48, source=cfg.source))
        bar.update(task, total=1, completed=1)
    paths = {split: write_dataset(ds, data_dir / f"{split}.npz") for split, ds in splits.items()}
    test = splits["test"]
    n_classes = test.n_classes if cfg.classes == 0 else min(cfg.classes, test.n_classes)
    per_class = int(test.labels.size and min(np.bincount(test.labels)))
    if cfg.per_exemplar > per_class:
        raise InputError(f"expected at most {per_class} drawings per exemplar (the human drawings per test class), "
                         f"got {cfg.per_exemplar}", field="--per-exemplar")
    human = test.to_samples(per_class=cfg.per_exemplar, classes=n_classes)  # exemplar_rows: of the kept classes
    human.meta["provenance"] = provenance({"from": str(paths["test"]), "classes": n_classes, "per_class": cfg.per_exemplar},
                                          cfg.seed)
    paths["human"] = write_samples(human, data_dir / "human.npz")
    record.commands.append(f"# human.npz: the first {n_classes} classes x {cfg.per_exemplar} drawings of "
                           f"`drawgap data {DATA_VERBS[cfg.data]} ... --as-samples`'s test_samples.npz (the exemplar among them where it is one "
                           f"of the first {cfg.per_exemplar}: {human.meta['exemplar_rows']} of {n_classes} classes)")
    n_train = splits["train"].n_classes if "train" in splits else test.meta["n_sub_categories_total"] - test.n_classes
    built = "" if "train" in splits else f" (not built: the shipped models' training split; the test classes were " \
        f"rebuilt from {test.meta['rebuilt_from_split']['categories']} categories)"
    console.print(f"{cfg.data}: {n_train} train classes{built}, {test.n_classes} test classes; "
                  f"human reference: {n_classes} classes x {cfg.per_exemplar} drawings")
    return paths


def quickdraw_test_split(cfg: DemoConfig, record: DemoRecord, data_dir: Path):
    """The QuickDraw-FS test split the shipped QuickDraw models were validated on, rebuilt from the categories of
    --source that hold its classes (its split record ships with drawgap): the classes, drawings and exemplars of
    the full build, each class checked against the record. The full build (every category, minutes more) would
    also make the training split, which the demo does not use; its command is recorded as the way to remake
    test.npz."""
    from drawgap.data.quickdraw_fs import SHIPPED_SPLIT, QuickDrawFSConfig, read_split_record, rebuild_test_split

    split = read_split_record(SHIPPED_SPLIT)
    test = rebuild_test_split(split, cfg.source, progress=False, workers=2)
    c = split["config"]
    default = QuickDrawFSConfig(categories=[])
    # the build's settings that the CLI takes, where they differ from its defaults (a float default such as the
    # test fraction 115/665 is left to the CLI rather than printed rounded)
    given = {option: c[key] for option, key in (("min_cluster", "min_cluster"), ("clusters_per_category", "clusters_per_category"),
                                                ("selection", "selection"), ("test_fraction", "test_fraction"),
                                                ("size", "image_size"), ("max_per_category", "max_per_category"),
                                                ("recognized_only", "recognized_only"), ("on_error", "on_error"),
                                                ("critic", "critic"))
             if c[key] != getattr(default, key)}
    record.commands.append(cli_command(["data", "quickdraw-fs"], categories=",".join(c["categories"]), source=cfg.source,
                                       **given, seed=c["seed"], out=data_dir))
    record.commands.append(f"# test.npz: the test split of the command above (which also writes train.npz), rebuilt from "
                           f"the {len(split['files'])} categories that hold its {len(split['test_classes'])} classes and "
                           f"checked class by class against drawgap's record of the shipped models' split "
                           f"({SHIPPED_SPLIT.name})")
    return test


def prepare_generators(cfg: DemoConfig, record: DemoRecord, console: Console, train_data: Path | None) -> dict[str, Path]:
    """Stage 2: a run directory per generator in OUT/generators: the shipped one copied, or one trained here."""
    from drawgap.models.training import run_training

    runs = {}
    to_train = []
    for name in demo_generators(cfg):
        run_dir = cfg.out / "generators" / name
        shipped = None if cfg.train else shipped_generator(cfg.data, name)
        if shipped is None and cfg.generators is None and name not in TRAINED_GENERATORS:
            console.print(f"[yellow]{cfg.data}-{name} is listed as shipped but its weights are not installed: left out "
                          f"(--generators {name} trains one here)[/]")
            continue
        if shipped is None:
            if not cfg.train:
                console.print(f"[yellow]drawgap ships no {cfg.data}-{name} generator yet: training one here "
                              f"within the budget ({cfg.budget:g} min for all generators)[/]")
            to_train.append((name, run_dir))
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        for f in RUN_FILES:
            if (shipped / f).is_file():
                shutil.copy2(shipped / f, run_dir / f)
        record.generators[name] = {"source": "shipped", "name": f"{cfg.data}-{name}", "dir": str(run_dir)}
        record.commands.append(f"cp -r {_q(shipped)} {_q(run_dir)}")
        console.print(f"{name}: shipped generator {cfg.data}-{name}")
        runs[name] = run_dir
    if to_train and train_data is None:
        raise InputError(f"drawgap ships no {cfg.data}-{to_train[0][0]} generator and the {cfg.data} demo builds no "
                         "training split to train one", field="--data")
    if to_train:
        minutes = cfg.budget / len(to_train)
        with _progress(console) as bar:
            task = bar.add_task("training", total=len(to_train))
            for name, run_dir in to_train:
                bar.update(task, description=f"training {name} ({'%d steps' % cfg.train_steps if cfg.train_steps else '%.1f min' % minutes})")
                result = run_training(name, train_data, run_dir, minutes=None if cfg.train_steps else minutes,
                                      steps=cfg.train_steps, seed=cfg.seed, progress=False)
                s = result.state
                record.generators[name] = {"source": "trained", "dir": str(run_dir), "steps": s.step,
                                           "seconds": round(s.seconds, 1), "loss": s.loss, "stopped_by": result.stopped_by}
                budget = {"steps": cfg.train_steps} if cfg.train_steps else {"minutes": minutes}
                record.commands.append(cli_command(["train", name], data=train_data, out=run_dir, **budget, seed=cfg.seed))
                console.print(f"{name}: trained {s.step} steps in {s.seconds / 60:.1f} min, loss "
                              f"{'-' if s.loss is None else f'{s.loss:.4f}'}")
                runs[name] = run_dir
                bar.advance(task)
    return runs


def sample_generators(cfg: DemoConfig, record: DemoRecord, console: Console, runs: dict[str, Path],
                      test_data: Path) -> list[Path]:
    """Stage 3: every generator from the test exemplars: a guided family (CFGDM) at each guidance value, the
    others (DDPM, the baselines) once; the DPM-Solver++ sampler where the family has a sampler."""
    from drawgap.models.naming import GUIDED_GENERATORS
    from drawgap.models.registry import generator_class
    from drawgap.models.sampling import sample_to_files

    jobs = [(n, g) for n in runs for g in (cfg.guidance if n in GUIDED_GENERATORS else (None,))]

    def sampler_options(name: str) -> dict:  # only the options the family has: a VAE or a GAN has no sampler
        defaults = generator_class(name).sampling_defaults
        return {k: v for k, v in (("sampler", "dpm++"), ("steps", cfg.sampler_steps)) if k in defaults}

    out_dir = cfg.out / "samples"
    written = []
    with _progress(console) as bar:
        task = bar.add_task("sampling", total=len(jobs))
        for name, g in jobs:
            bar.update(task, description=f"sampling {name}" + ("" if g is None else f" g={g:g}"))
            written += sample_to_files(runs[name], test_data, out_dir, per_exemplar=cfg.per_exemplar,
                                       guidance=None if g is None else [g], seed=cfg.seed, classes=cfg.classes,
                                       **sampler_options(name))
            bar.advance(task)
    common = dict(exemplars=test_data, out=out_dir, per_exemplar=cfg.per_exemplar, seed=cfg.seed, classes=cfg.classes)
    for name in runs:
        guidance = ",".join(f"{g:g}" for g in cfg.guidance) if name in GUIDED_GENERATORS else None
        record.commands.append(cli_command(["sample"], runs[name], **common, **sampler_options(name), guidance=guidance))
    return written


def load_critics(data: str) -> tuple:
    """The shipped critic pair of a dataset (`<data>-simclr`, `<data>-protonet`); loaded before any work so
    that missing weights stop the demo at once."""
    from drawgap.metrics.evaluate import resolve_critics

    return resolve_critics(data)


def evaluate_systems(cfg: DemoConfig, record: DemoRecord, console: Console, human: Path,
                     samples: list[Path], critics: tuple | None = None) -> list[Path]:
    """Stage 4: metrics of the human reference, then of each samples file against it."""
    from drawgap.metrics.evaluate import evaluate
    from drawgap.metrics.metrics_file import write_metrics

    simclr, protonet = critics or load_critics(cfg.data)
    metrics_dir = cfg.out / "metrics"
    human_metrics = metrics_dir / "human.json"
    options = dict(simclr=simclr, protonet=protonet, queries=cfg.queries, bootstrap=cfg.bootstrap)
    written = []
    with _progress(console) as bar:
        task = bar.add_task("evaluating human", total=1 + len(samples))
        written.append(write_metrics(evaluate(human, name="human", **options), human_metrics))
        bar.advance(task)
        for path in samples:
            bar.update(task, description=f"evaluating {path.stem}")
            written.append(write_metrics(evaluate(path, human=human_metrics, **options), metrics_dir / f"{path.stem}.json"))
            bar.advance(task)
    flags = dict(critics=cfg.data, queries=cfg.queries, bootstrap=cfg.bootstrap)
    record.commands.append(cli_command(["evaluate"], human, **flags, name="human", out=human_metrics))
    for path in samples:
        record.commands.append(cli_command(["evaluate"], path, **flags, human=human_metrics,
                                           out=metrics_dir / (path.stem + ".json")))
    return written


def _percent(fraction, spec: str = ".0f") -> str:
    return "-" if fraction is None else f"{100 * fraction:{spec}} %"


def compute_importance(cfg: DemoConfig, record: DemoRecord, console: Console, runs: dict[str, Path], test_data: Path,
                       critics: tuple | None = None) -> list[Path]:
    """Stage 5: importance maps of the CFGDM and of both critics, and an ink report of each maps file.

    Diffusion maps: the first `importance_classes` test exemplars, along `IMPORTANCE_TRAJECTORIES` sampling
    trajectories each. Critic maps: one test drawing (not the exemplar) of each of those classes, target its
    class in the episode of all test exemplars (what `drawgap importance maps critic` does with a dataset file). Ink
    reports: on the strokes dataset, with the mass on each stroke (the generator knows its strokes).
    Each call below is made with the options its recorded CLI command passes, so the command rewrites the
    same maps (see the settings at the top of this module for why they were chosen).
    """
    from drawgap.data.formats import read_dataset
    from drawgap.importance.compare import ink_report, strokes_masks
    from drawgap.importance.critic_attribution import critic_importance
    from drawgap.importance.diffusion_maps import DEFAULT_KINDS, diffusion_importance, exemplars_of
    from drawgap.importance.maps_file import read_maps, write_maps

    simclr, protonet = critics or load_critics(cfg.data)
    test = read_dataset(test_data)
    out_dir = cfg.out / "importance"
    maps_paths: list[Path] = []
    jobs = (["cfgdm"] if "cfgdm" in runs else []) + ["protonet", "simclr"]
    with _progress(console) as bar:
        task = bar.add_task("importance", total=len(jobs) + 1)
        if "cfgdm" in runs:
            from drawgap.models import load_generator

            bar.update(task, description="importance: cfgdm maps")
            generator = load_generator(runs["cfgdm"])
            T = int(generator.schedule.config.num_train_timesteps)
            options = dict(kinds=DEFAULT_KINDS, n_trajectories=IMPORTANCE_TRAJECTORIES, sampler="dpm++", steps=cfg.sampler_steps,
                           guidance=IMPORTANCE_GUIDANCE, t_range=(1, T), grad_steps=IMPORTANCE_GRAD_STEPS,
                           batch_size=IMPORTANCE_BATCH, precision="fp32")
            images, classes, ids = exemplars_of(test, cfg.importance_classes)
            for kind, m in diffusion_importance(generator, images, classes, seed=cfg.seed, image_ids=ids, **options).items():
                maps_paths.append(write_maps(m, out_dir / f"cfgdm.{kind}.npz"))  # the CLI's OUT.<kind>.npz
            record.commands.append(cli_command(
                ["importance", "maps", "diffusion"], runs["cfgdm"], exemplars=test_data, out=out_dir / "cfgdm.npz",
                kind=list(DEFAULT_KINDS), classes=cfg.importance_classes, trajectories=IMPORTANCE_TRAJECTORIES, sampler="dpm++",
                steps=cfg.sampler_steps, guidance=IMPORTANCE_GUIDANCE, t_min=1, t_max=T, grad_steps=IMPORTANCE_GRAD_STEPS,
                batch_size=IMPORTANCE_BATCH, precision="fp32", seed=cfg.seed))
            bar.advance(task)
        else:
            console.print("[yellow]no cfgdm among the generators: no diffusion importance maps[/]")
        for name, critic in (("protonet", protonet), ("simclr", simclr)):
            bar.update(task, description=f"importance: {name} maps")
            m = critic_importance(critic, test, CRITIC_METHOD, per_class=1, seed=cfg.seed, classes=cfg.importance_classes)
            maps_paths.append(write_maps(m, out_dir / f"{name}.npz"))
            shipped = getattr(critic, "name", None) or f"{cfg.data}-{name}"
            record.commands.append(cli_command(
                ["importance", "maps", "critic"], shipped, data=test_data, out=out_dir / (name + ".npz"),
                method=CRITIC_METHOD, per_class=1, classes=cfg.importance_classes, seed=cfg.seed))
            bar.advance(task)

        bar.update(task, description="importance: ink reports")
        ink_paths = []
        for path in maps_paths:
            m = read_maps(path)
            masks = strokes_masks(test, m.image_ids, path=path) if cfg.data == "strokes" else None
            report = ink_report(m, INK_OPTIONS["resolution"], INK_OPTIONS["threshold"], INK_OPTIONS["dilate"], masks)
            ink = out_dir / f"{path.stem}_ink.json"
            write_json_atomic(ink, report)
            ink_paths.append(ink)
            record.commands.append(cli_command(["importance", "ink"], path, out=ink,
                                               strokes=test_data if masks is not None else None, **INK_OPTIONS))
            mean = report["mean"]
            console.print(f"{path.stem}: {_percent(mean.get('mass_on_ink'))} of the mass on the ink "
                          f"({_percent(mean.get('ink_area'))} of the pixels); half the mass on "
                          f"{_percent(mean.get('pixels_50'), '.1f')} of the pixels")
        bar.advance(task)
    return maps_paths + ink_paths


def write_demo_report(cfg: DemoConfig, record: DemoRecord) -> Path:
    """Last stage: the HTML report, and every figure as PNG and PDF in OUT/figures."""
    from drawgap.report.html import write_report

    out = cfg.out / "report.html"
    record.commands.append(cli_command(["report"], cfg.out, out=out, figures=cfg.out / "figures"))
    record.save(cfg.out)  # the report shows these commands
    return write_report(cfg.out, out, cfg.out / "figures")


def summary_table(results_dir: Path) -> Table:
    """The short table printed at the end: one row per system."""
    from drawgap.report.results import load_results

    results = load_results(results_dir)
    table = Table(title="drawgap demo: results")
    for col in ("system", "diversity", "recognizability %", "originality", "distance to human"):
        table.add_column(col, justify="left" if col == "system" else "right")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in results.systems:
        table.add_row(r["name"], fmt(r["diversity"], ".3f"), fmt(r["recognizability"], ".1f"),
                      fmt(r["originality"], ".3f"), fmt(r.get("distance_to_human"), ".2f"))
    return table


def run_demo(cfg: DemoConfig, console: Console | None = None) -> Path:
    """Run every stage into cfg.out; return the report's path."""
    cfg.check()
    critics = load_critics(cfg.data)
    if cfg.data == "quickdraw":  # no training split to fall back on: the shipped generators must be there
        # those it would otherwise train: ddpm and cfgdm, or every --generators one (other listed families that
        # are not installed are left out with a note, as for every dataset)
        required = demo_generators(cfg) if cfg.generators is not None else TRAINED_GENERATORS
        missing = [f"{cfg.data}-{name}" for name in required if shipped_generator(cfg.data, name) is None]
        if missing:
            raise InputError(f"drawgap ships no {', '.join(missing)} generator (installed in {SHIPPED_GENERATORS_DIR}); "
                             "the quickdraw demo evaluates the shipped QuickDraw models", field="--data")
    console = console or Console(stderr=False)
    cfg.out.mkdir(parents=True, exist_ok=True)
    record = DemoRecord(config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()})
    total = 6 if cfg.importance_classes else 5
    with _Stage(record, cfg.out, console, "data", 1, total) as stage:
        data = build_data(cfg, record, console)
        stage.outputs += list(data.values())
    with _Stage(record, cfg.out, console, "generators", 2, total) as stage:
        runs = prepare_generators(cfg, record, console, data.get("train"))
        stage.outputs += list(runs.values())
    with _Stage(record, cfg.out, console, "sample", 3, total) as stage:
        samples = sample_generators(cfg, record, console, runs, data["test"])
        stage.outputs += samples
    with _Stage(record, cfg.out, console, "evaluate", 4, total) as stage:
        stage.outputs += evaluate_systems(cfg, record, console, data["human"], samples, critics)
    if cfg.importance_classes:
        with _Stage(record, cfg.out, console, "importance", 5, total) as stage:
            stage.outputs += compute_importance(cfg, record, console, runs, data["test"], critics)
    with _Stage(record, cfg.out, console, "report", total, total) as stage:
        report = write_demo_report(cfg, record)
        stage.outputs.append(report)
    console.print(summary_table(cfg.out))
    console.print(f"report: [bold]{report}[/]")
    return report


def main_console() -> Console:
    """The console the CLI uses: progress bars animate only on a terminal."""
    return Console(force_terminal=None, highlight=False, file=sys.stdout)
